"""altgrad-suite on the command line: the dry run's plan, overrides after the options, and
one-line errors (a missing folder, a repeated seed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from altgrad_triton.cli import suite as suite_cli
from tests.helpers import assert_user_error, one_error_line, run_command, suite_folder


@pytest.fixture
def folder(tmp_path):
    return suite_folder(tmp_path)


ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "recipes" / "wt2-small.toml"


def test_dry_run_lists_plan(folder, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "exp-a-s3").mkdir(parents=True)
    (out / "exp-a-s3" / "results.json").write_text("{}")
    rc = suite_cli.main([str(folder), "--seeds", "3", "--out", str(out), "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "2 runs: 1 done (skipped), 0 to resume, 1 to run" in text
    assert "exp-b-s3" in text
    assert not (out / "exp-b-s3").exists()


def test_overrides_may_follow_the_options(folder, tmp_path, capsys):
    args = [str(folder), "--seeds", "1", "--out", str(tmp_path), "--dry-run", "run.threads=1"]
    assert suite_cli.main(args) == 0
    assert suite_cli.main([*args[:-1], "run.threads=-1"]) == 2  # the override was read
    assert "run.threads" in capsys.readouterr().err


def test_missing_folder_is_one_line_error(tmp_path, capsys):
    assert suite_cli.main([str(tmp_path / "none"), "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_an_override_after_the_seeds_is_named_as_one(folder, capsys):
    code, _, err = run_command(suite_cli.main, capsys, folder, "--seeds", "1", "run.epochs=2")
    line = one_error_line(code, err)
    assert "'run.epochs=2' is an override, not a seed; write overrides before --seeds" in line


def test_a_suite_refuses_a_repeated_seed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.suite", str(SMALL), "--seeds", "1", "1",
         "--out", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert_user_error(proc, "--seeds: 1 given more than once")
