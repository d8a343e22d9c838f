"""The copy-task probe (``experiments/horizon_probe.py``): altgrad-horizon --probe trains,
then probes the model and its synthesizer on fresh episodes."""

import json


def test_the_copy_task_probe_reads_a_trained_horizon_run(tmp_path, capsys):
    """The positive control's path: altgrad-horizon --probe trains, then probes the model and
    its linear synthesizer on fresh episodes (float64), one JSON line per run."""
    from altgrad_triton.cli import horizon as horizon_cli

    args = ["--truncations", "3", "--methods", "sg", "--budget", "120", "--hidden", "8"]
    args += ["--batch-size", "4", "--window", "30", "--probe", "2", "--out", str(tmp_path)]
    assert horizon_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "linear: cos" in out and "discarded/within" in out
    (report,) = [json.loads(line) for line in (tmp_path / "probe.jsonl").read_text().splitlines()]
    assert report["horizons"] == [1, 2] and report["synthesizers"] == ["linear"]
    assert report["dtype"] == "float64" and report["mean"]["1"]["grad_norm"] > 0
    assert horizon_cli.main([*args[:-2], "--probe", "0", "--out", str(tmp_path)]) == 2
    assert "--probe: must be >= 1" in capsys.readouterr().err
