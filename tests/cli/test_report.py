"""altgrad-report: the Markdown it writes, one run counted once however it is named, a broken
run left out with one line, and one-line errors for outputs that cannot be written."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from altgrad_triton import report
from altgrad_triton.cli import report as report_cli
from altgrad_triton.errors import UserError
from tests.helpers import assert_machine_fault, assert_user_error, command, fake_run

ROOT = Path(__file__).resolve().parents[2]


def report_of(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.report", *args, "--no-plots"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


@pytest.fixture
def report_runs(tmp_path):
    fake_run(tmp_path / "runs", "a-s1", "wikitext-2-small", [5.0, 4.0])
    return tmp_path / "runs"


def test_cli_writes_markdown(tmp_path, capsys):
    fake_run(tmp_path / "runs", "a-s1", "wikitext-2-small", [5.0, 4.0])
    assert (
        report_cli.main([str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--no-plots"]) == 0
    )
    assert "| a |" in (tmp_path / "o" / "report.md").read_text()
    assert "| a |" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert report_cli.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(UserError):
        report.find_runs([tmp_path])  # exists, but holds no runs


def test_one_run_named_three_times_or_copied_is_one_seed(tmp_path):
    runs = tmp_path / "runs"
    one = fake_run(runs, "a-s1", "wikitext-2-small", [5.0, 4.0])
    fake_run(runs, "a-s2", "wikitext-2-small", [5.0, 4.2])
    shutil.copytree(one, tmp_path / "elsewhere" / "a-s1")
    again = os.path.relpath(one, tmp_path / "elsewhere")
    proc = report_of(str(one), str(one), f"{tmp_path / 'elsewhere'}/{again}", str(runs),
                     str(tmp_path / "elsewhere"), "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "2 runs in 1 groups." in proc.stdout
    notes = proc.stderr.strip().splitlines()
    assert len(notes) == 4 and all("is the same run as" in n for n in notes), notes
    assert f"{tmp_path / 'elsewhere' / 'a-s1'} is the same run as {one}" in notes[-1]


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda d: (d / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": "low"}\n'),
         "metrics.jsonl: val_loss must be a number, got 'low'"),
        (lambda d: (d / "results.json").write_text('{"best_val_loss": "x"}'),
         "results.json: best_val_loss must be a number, got 'x'"),
        (lambda d: ((d / "metrics.jsonl").unlink(), (d / "metrics.jsonl").mkdir()),
         "metrics.jsonl: cannot read (Is a directory)"),
        (lambda d: (d / "metrics.jsonl").write_text("garbage\n"),
         "metrics.jsonl: holds no complete JSON line"),
    ],
    ids=["val-loss-text", "best-val-loss-text", "metrics-folder", "only-line-garbage"],
)  # fmt: skip
def test_a_broken_run_is_one_line_and_the_others_still_tabulate(tmp_path, damage, says):
    runs = tmp_path / "runs"
    fake_run(runs, "a-s1", "wikitext-2-small", [5.0, 4.0])
    broken = fake_run(runs, "a-s2", "wikitext-2-small", [5.0, 4.2])
    damage(broken)
    proc = report_of(str(runs), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "1 runs in 1 groups." in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: left out a broken run: "), lines
    assert f"{broken}/{says}" in lines[0]
    alone = report_of(str(broken), "--out", str(tmp_path / "out"))  # nothing else to report
    assert_user_error(alone, f"{broken}/{says}")


def test_report_outputs_that_cannot_be_written_are_one_line(report_runs, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert_user_error(report_of(str(report_runs), "--out", str(a_file)), "a file stands where")
    proc = report_of(str(report_runs), "--markdown", str(tmp_path))
    assert_user_error(proc, f"{tmp_path}", "a folder stands where a file is needed")
    proc = report_of(str(report_runs), "--out", str(tmp_path / "o"), "--versus", "wt2=\\9")
    assert_user_error(proc, "--versus: '\\\\9' is not a replacement for 'wt2'")
    if not Path("/dev/full").exists():  # Linux's always-full device
        return
    with open("/dev/full", "w") as full:
        proc = command("report", str(report_runs), "--out", str(tmp_path / "o"), stdout=full)
    assert_machine_fault(proc, "No space left on device")


def test_a_report_into_a_runs_checkpoints_is_refused_before_it_is_made(report_runs, tmp_path):
    ckpt = report_runs / "a-s1" / "checkpoints" / "best"
    ckpt.mkdir(parents=True)
    for name in ("meta.json", "model.safetensors"):
        (ckpt / name).write_text("{}")
    proc = report_of(str(report_runs), "--out", str(ckpt.parent))
    assert_user_error(proc, f"--out {ckpt.parent}: inside", "which altgrad-train manages")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["best"]


def test_a_read_only_output_disk_is_one_line_exit_1(report_runs, tmp_path, monkeypatch, capsys):
    from altgrad_triton.cli import report as report_cli
    from altgrad_triton.report import write

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(write, "write_text_atomic", read_only)
    assert report_cli.main([str(report_runs), "--out", str(tmp_path / "o"), "--no-plots"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'o' / 'report.md'}: Read-only file system"]
