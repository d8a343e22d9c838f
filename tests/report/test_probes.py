"""The truncation-probe part of the report (``report/probes.py``): its table and plots from
probe records."""

from __future__ import annotations

import json

import pytest

from altgrad_triton import report
from tests.helpers import fake_run


def probe_record(epoch: int, ratios: dict[int, float], synth_cos: float | None = None) -> dict:
    """A probe record as probe_run.probe_record writes it, with only what the report reads."""
    synths = {} if synth_cos is None else {"toolkit": {"cos": synth_cos}}
    return {
        "epoch": epoch,
        "horizons": sorted(ratios),
        "mean": {
            str(m): {"layers": {"all": {"ratio": r, "cos": 0.1}}, "synthesizers": synths}
            for m, r in ratios.items()
        },
    }


def test_the_probe_table_and_plots_from_probe_records(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from altgrad_triton.report import probes

    shaded = []
    monkeypatch.setattr(probes, "_mark_phases", lambda axes, epochs: shaded.append(epochs))
    runs = tmp_path / "runs"
    for seed, share in ((1, 0.06), (2, 0.08)):
        d = fake_run(runs, f"wt2-alt-s{seed}", "wikitext-2-small", [5.0, 4.8],
                     modes=["real", "synthetic"])  # fmt: skip
        lines = [probe_record(e, {1: share / e, 2: share / e}, 0.01 * e) for e in (1, 2)]
        (d / "probe.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    # altgrad-probe's file, at longer horizons, is the final probe where there is one
    d = fake_run(runs, "wt2-bptt-s1", "wikitext-2-small", [5.0, 4.9])
    (d / "probe-train.json").write_text(json.dumps(probe_record(2, {1: 0.05, 2: 0.05, 4: 0.07})))
    fake_run(runs, "wt2-plain-s1", "wikitext-2-small", [5.0, 4.9])  # never probed: no row
    # probed only at the end (no per-epoch lines): in the probe table, not in the epochs plot
    d = fake_run(runs, "wt2-a-sg-s1", "wikitext-2-small", [5.0, 4.9], modes=["synthetic"] * 2)
    (d / "probe-train.json").write_text(json.dumps(probe_record(2, {1: 0.05})))
    md, plots, note = report.write_report([runs], tmp_path / "out")
    text = md.read_text()
    # epoch 2's lines: 0.03 and 0.04, mean 0.035, sample std 0.00707; cos 0.02 both seeds
    assert (
        "| wikitext-2-small | wt2-alt | 1,2 | 2 | 2 | 0.035 ± 0.007 | 0.100 ± 0.000 | "
        "toolkit 0.020 ± 0.000 |" in text
    )
    assert "| wikitext-2-small | wt2-bptt | 1 | 2 | 4 | 0.070 | 0.100 | - |" in text
    assert "wt2-plain |" not in text.split("Truncation probe")[1]
    names = {p.name for p in plots}
    assert {"wikitext-2-small--probe-epochs.png", "wikitext-2-small--probe-horizon.png"} <= names
    assert note is None
    # the epochs plot shades the drawn alternating group's synthetic epoch (the BPTT run
    # has none; the synthetic run without per-epoch probes is not drawn there)
    assert [[e["mode"] for e in epochs] for epochs in shaded] == [["real", "synthetic"]]
