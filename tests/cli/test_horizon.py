"""altgrad-horizon: runs, skips what is done and renders its table; a repeated seed is refused
before any run."""

from __future__ import annotations

from altgrad_triton.cli import horizon as horizon_cli
from altgrad_triton.experiments import horizon


def test_cli_runs_skips_and_renders(tmp_path, capsys):
    args = [
        "--out",
        str(tmp_path),
        "--truncations",
        "2",
        "--budget",
        "20",
        "--hidden",
        "4",
        "--batch-size",
        "2",
        "--window",
        "4",
    ]
    assert horizon_cli.main(args) == 0
    rows = horizon.read_rows(tmp_path / "results.jsonl")
    assert len(rows) == 2
    assert horizon_cli.main(args) == 0
    assert "done already, skipped" in capsys.readouterr().out
    assert len(horizon.read_rows(tmp_path / "results.jsonl")) == 2
    assert "| 2 |" in (tmp_path / "table.md").read_text()
    assert horizon_cli.main(["--methods", "dni", "--out", str(tmp_path)]) == 2
    capsys.readouterr()
    # other settings into the same folder would be skipped as done and averaged together
    other = [a if a != "20" else "30" for a in args]
    assert horizon_cli.main(other) == 2
    err = capsys.readouterr().err
    assert "holds runs made with budget=20, not 30; give these settings another --out" in err
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"task": "co')  # a run killed mid-write
    assert len(horizon.read_rows(tmp_path / "results.jsonl")) == 2


def test_a_seed_given_twice_is_refused_before_any_run(tmp_path, capsys):
    from altgrad_triton.cli import horizon as horizon_cli

    code = horizon_cli.main(["--seeds", "1", "1", "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        "error: --seeds: 1 given more than once; each seed is one run, and a repeated one "
        "would count the same run twice"
    )
    assert not (tmp_path / "h").exists()
