"""Issue 24: no run can delete another, reports never invent seeds, one-line errors from
every command, and a preempted run (SIGTERM, SIGHUP) saves like Ctrl-C."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from altgrad_triton import files
from altgrad_triton.config import recipe as recipes
from altgrad_triton.errors import UserError
from altgrad_triton.run import folder as rundir
from tests.helpers import tiny_corpus, tiny_recipe
from tests.test_cli import assert_user_error, train
from tests.test_report import fake_run

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "recipes" / "wt2-small.toml"


# ---------------------------------------------------------------------------- run names


@pytest.mark.parametrize(
    "override",
    [
        "run.name=",
        'run.name=""',
        'run.name="abc',
        "run.name=a/b",
        "run.name=..",
        "run.name=.",
        'run.name="a b"',
        'run.name="it\'s"',
        'run.name="a\\b"',
    ],
)
def test_a_run_name_that_is_not_one_folder_name_is_refused(override):
    with pytest.raises(UserError, match=r"run\.name: must be one non-empty folder name") as e:
        recipes.load(SMALL, [override])
    assert "\n" not in str(e.value)


def test_an_empty_run_name_is_one_line_from_the_command(tmp_path):
    proc = train(SMALL, "run.name=", f"run.out_dir={tmp_path}")
    assert_user_error(proc, "run.name: must be one non-empty folder name", "got ''")
    assert list(tmp_path.iterdir()) == []


def test_a_home_folder_in_a_path_key_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    r = recipes.load(SMALL, ['run.out_dir="~/x"', 'data.cache_dir="~/cache"', 'data.path="~/d"'])
    assert (r.run.out_dir, r.data.cache_dir, r.data.path) == (
        str(tmp_path / "x"),
        str(tmp_path / "cache"),
        str(tmp_path / "d"),
    )


def finished_run(folder: Path) -> None:
    """A finished run's files, as altgrad-train leaves them."""
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "checkpoints" / "best" / "meta.json").write_text('{"epoch": 2}')
    (folder / "recipe.toml").write_text('[run]\nname = "checkpoints"\n')
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 5.0}\n')
    (folder / "results.json").write_text('{"best_val_loss": 5.0}')


def test_a_fresh_start_never_removes_a_sibling_run_named_checkpoints(tmp_path):
    out = tmp_path / "runs"
    finished_run(out / "checkpoints")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with rundir.claim(out, resuming=False):  # what an empty run.name made of run.out_dir
        pass
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_fresh_start_removes_only_the_checkpoints_its_run_left(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)
    (run / "recipe.toml").write_text('[run]\nname = "run"\n')
    (run / "checkpoints" / "last").mkdir()
    (run / "checkpoints" / "notes").mkdir()
    with rundir.claim(run, resuming=False):
        pass
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["notes"]


# ---------------------------------------------------------------------------- preemption


def train_process(recipe_file: Path, *args: str, **popen) -> subprocess.Popen:
    """altgrad-train on ``recipe_file`` in a process of its own, one CPU thread."""
    return subprocess.Popen(
        [sys.executable, "-m", "altgrad_triton.cli.train", str(recipe_file), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **popen,
    )


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields."""
    rows = files.read_jsonl(run_dir / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s")} for r in rows]


@pytest.fixture(scope="module")
def preemption(tmp_path_factory):
    """A recipe whose epochs take a second or two, and its run trained without a stop."""
    tmp = tmp_path_factory.mktemp("preemption")
    data = tiny_corpus(tmp / "data", n_train=1500)
    r = tiny_recipe(data, tmp / "runs", run={"threads": 1, "log_every": 1, "epochs": 2})
    (tmp / "tiny.toml").write_text(recipes.to_toml(r))
    straight = train_process(tmp / "tiny.toml", "run.name=straight")
    out, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err
    return tmp, metric_rows(tmp / "runs" / "straight")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_preempted_run_saves_exits_with_its_signal_and_resumes_exactly(preemption, sig):
    tmp, straight = preemption
    name = f"stopped-{sig.name}"
    run = tmp / "runs" / name
    proc = train_process(tmp / "tiny.toml", f"run.name={name}")
    assert proc.stdout is not None
    for line in proc.stdout:  # the third segment of epoch 1 is trained: training is on
        if " 3/" in line:
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"{sig.name}: stopping after this segment to save" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"stopped: interrupted by {sig.name} at epoch 1, segment ")
    assert lines[0].endswith(f"; saved. Continue with: altgrad-train --resume {run}")
    assert (run / "checkpoints" / "last" / "meta.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.train", "--resume", str(run)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert metric_rows(run) == straight


# ---------------------------------------------------------------------------- seeds


def report_of(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.report", *args, "--no-plots"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


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


def test_a_suite_refuses_a_repeated_seed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.suite", str(SMALL), "--seeds", "1", "1",
         "--out", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert_user_error(proc, "--seeds: 1 given more than once")


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


# ---------------------------------------------------------------------------- one line each

COMMANDS = ["train", "eval", "generate", "report", "suite", "horizon", "bench", "tune"]


def command(name: str, *args: str, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"altgrad_triton.cli.{name}", *args],
        stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_option_is_one_line_from_every_command(name):
    proc = command(name, "somewhere", "--no-such-option")
    assert_user_error(proc, "--no-such-option", f"altgrad-{name} --help")


def assert_machine_fault(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 1 (the machine's fault, not the user's) and one ``error:`` line, the last
    on stderr (altgrad-eval --json shows its progress there)."""
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])


@pytest.fixture
def report_runs(tmp_path):
    fake_run(tmp_path / "runs", "a-s1", "wikitext-2-small", [5.0, 4.0])
    return tmp_path / "runs"


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


def test_a_read_only_output_disk_is_one_line_exit_1(report_runs, tmp_path, monkeypatch, capsys):
    from altgrad_triton.cli import report as report_cli
    from altgrad_triton.report import write

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(write, "write_text_atomic", read_only)
    assert report_cli.main([str(report_runs), "--out", str(tmp_path / "o"), "--no-plots"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'o' / 'report.md'}: Read-only file system"]


def test_absurd_thread_counts_are_refused():
    with pytest.raises(UserError, match=r"run\.threads: must be <= 1024, got 100000"):
        recipes.load(SMALL, ["run.threads=100000"])
    proc = command("horizon", "--threads", "100000")
    assert_user_error(proc, "--threads: must be from 1 to 1024, got 100000")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained for one epoch."""
    from altgrad_triton.run.train import Trainer

    root = tmp_path_factory.mktemp("trained")
    recipe = tiny_recipe(tiny_corpus(root / "data"), root / "runs", run={"epochs": 1})
    Trainer(recipe, root / "runs" / "tiny").fit()
    return root / "runs" / "tiny"


def test_a_seed_beyond_64_bits_is_one_line(trained, capsys):
    from altgrad_triton import load_run
    from altgrad_triton.cli import generate as generate_cli

    with pytest.raises(UserError, match=r"seed: must be an integer from 0 to 2\*\*63 - 1"):
        load_run(trained).generate(5, seed=2**63)
    assert generate_cli.main([str(trained), "--seed", str(2**63), "--words", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: seed: must be an integer from 0 to 2**63 - 1, got {2**63}"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_eval_json_to_a_full_disk_is_one_line_exit_1(trained):
    with open("/dev/full", "w") as full:
        proc = command("eval", str(trained), "--json", stdout=full)
    assert_machine_fault(proc, "No space left on device")


def test_a_meta_json_without_vocab_names_the_key_and_the_file(trained, tmp_path):
    from altgrad_triton import load_run

    copy = tmp_path / "tiny"
    shutil.copytree(trained, copy)
    meta = copy / "checkpoints" / "best" / "meta.json"
    data = json.loads(meta.read_text())
    del data["vocab"]
    meta.write_text(json.dumps(data))
    with pytest.raises(UserError) as e:
        load_run(copy)
    assert str(e.value).startswith(
        f"{copy / 'checkpoints' / 'best'}/meta.json: lacks the key 'vocab'"
    )


def test_a_resume_that_renames_the_run_is_refused(trained, tmp_path):
    from altgrad_triton.cli import train as train_cli

    recipe = (trained / "recipe.toml").read_text()
    with pytest.raises(UserError, match=r"run\.name=other would rename the run 'tiny'"):
        train_cli.body(["--resume", str(trained), "run.name=other"])
    assert (trained / "recipe.toml").read_text() == recipe
