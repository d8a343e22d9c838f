"""The report's plots (``report/plots.py``): synthetic spans and restarts, and the gap plots
taking the phase table's baseline."""

from __future__ import annotations

import pytest

from altgrad_triton import report
from altgrad_triton.report import plots
from tests.helpers import fake_run


def test_synthetic_spans_and_restarts():
    modes = ["real", "synthetic", "synthetic", "real", "synthetic"]
    epochs = [{"epoch": i, "mode": m, "restart": i in (3, 5)} for i, m in enumerate(modes, 1)]
    assert report.synthetic_spans(epochs) == [(1.5, 3.5), (4.5, 5.5)]
    assert report.restart_epochs(epochs) == [3, 5]


def test_the_gap_plots_take_the_same_baseline_as_the_phase_table(tmp_path):
    pytest.importorskip("matplotlib")
    for seed in (1, 2):
        for name in ("a-sg", "a-bptt", "a-dni"):
            fake_run(tmp_path / "runs", f"{name}-s{seed}", "ptb", [5.0, 4.0 + seed / 10])
    groups = report.group_runs(report.find_runs([tmp_path / "runs"]))
    rules = [report.parse_versus(v) for v in ("sg=dni", "sg=bptt")]
    written = plots.plot_gaps(groups, rules, tmp_path / "plots")
    assert [p.name for p in written] == ["ptb--a-sg--vs--a-dni.png"]
