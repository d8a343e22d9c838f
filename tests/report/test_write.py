"""Writing the report (``report/write.py``): the Markdown file with its plots, without
matplotlib, and the phase table only where a synthesizer was fitted."""

from __future__ import annotations

import pytest

from altgrad_triton import report
from altgrad_triton.report import plots as report_plots
from tests.helpers import fake_run


def test_write_report_with_plots(tmp_path):
    pytest.importorskip("matplotlib")
    runs = tmp_path / "runs"
    modes = ["real", "synthetic", "synthetic", "real"]
    for seed, losses, cos in ((1, [5.0, 4.8, 4.7, 4.6], 0.2), (2, [5.1, 4.9, 4.7, 4.5], 0.3)):
        fake_run(
            runs,
            f"wt2-alt-s{seed}",
            "wikitext-2-small",
            losses,
            modes=modes,
            restarts=(3,),
            sg_cos=cos,
        )
    md, plots, note = report.write_report([runs], tmp_path / "out")
    assert note is None
    assert {p.name for p in plots} == {
        "wikitext-2-small--wt2-alt.png",
        "wikitext-2-small--overview.png",
    }
    assert all(p.stat().st_size > 1000 for p in plots)
    text = md.read_text()
    assert "| wt2-alt |" in text and "](plots/wikitext-2-small--wt2-alt.png)" in text
    for seed in (1, 2):  # with a seed twin, the difference per epoch gets a plot of its own
        fake_run(runs, f"wt2-bptt-s{seed}", "wikitext-2-small", [5.0, 4.9, 4.8, 4.7])
    md, plots, _ = report.write_report([runs], tmp_path / "out", versus=["alt=bptt"])
    gap = [p for p in plots if p.name == "wikitext-2-small--wt2-alt--vs--wt2-bptt.png"]
    assert len(gap) == 1 and gap[0].stat().st_size > 1000
    assert "](plots/wikitext-2-small--wt2-alt--vs--wt2-bptt.png)" in md.read_text()


def test_missing_matplotlib_still_writes_tables(tmp_path, monkeypatch):
    fake_run(tmp_path / "runs", "a-s1", "wikitext-2-small", [5.0])
    monkeypatch.setattr(report_plots, "import_pyplot", lambda: None)
    md, plots, note = report.write_report([tmp_path / "runs"], tmp_path / "out")
    assert plots == [] and "matplotlib" in note
    assert "| a |" in md.read_text()


def test_report_has_the_phase_table_only_where_a_synthesizer_was_fitted(tmp_path):
    fake_run(tmp_path, "bptt-s1", "wikitext-2", [5.0, 4.0])
    md, _, _ = report.write_report([tmp_path], tmp_path / "out", plots=False)
    assert "Gradient-mode phases" not in md.read_text()
    fake_run(tmp_path, "sg-s1", "wikitext-2", [5.0, 4.0], modes=["real", "synthetic"], sg_cos=0.2)
    md, _, _ = report.write_report([tmp_path], tmp_path / "out", plots=False)
    assert "| sg | - | 2 | synthetic | 0.200 | 0.200 | - | - |" in md.read_text()
