"""The run folder: one writer (a lock between real processes), what a run continues from, a
fresh start's clean slate, and the one-line messages for folders that cannot be written."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import pytest

from altgrad_triton.errors import UserError
from altgrad_triton.run import folder as rundir
from altgrad_triton.run import lock as runlock

# A process that takes the lock of a run folder, says so, and holds it until killed.
HOLDER = r"""
import sys, time
from altgrad_triton import runlock
lock = runlock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def hold(run_dir):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def complete(run_dir, tag, epoch=2):
    """A checkpoint folder as a finished save leaves it (meta.json is what marks it)."""
    path = run_dir / "checkpoints" / tag
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"epoch": epoch, "model_shape": {}}))
    return path


def test_a_second_process_is_refused_naming_the_holder_then_a_dead_ones_lock_is_taken_over(
    tmp_path,
):
    run = tmp_path / "run"
    holder = hold(run)
    try:
        with pytest.raises(UserError, match=rf"{run} is in use by altgrad-train pid {holder.pid} "):
            runlock.acquire(run)
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to release: the file stays behind
        holder.wait()
    assert (run / runlock.LOCK_FILE).exists()
    with runlock.acquire(run) as lock:
        assert lock.notes == [
            f"note: taking over {run / runlock.LOCK_FILE}, left by altgrad-train pid "
            f"{holder.pid} on {os.uname().nodename}, which has ended"
        ]
        assert json.loads((run / runlock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (run / runlock.LOCK_FILE).exists()


@pytest.mark.parametrize("how", ["normally", "UserError", "KeyboardInterrupt", "RuntimeError"])
def test_the_lock_is_released_on_every_way_out(tmp_path, how):
    run = tmp_path / "run"
    run.mkdir()
    errors = {"UserError": UserError("x"), "KeyboardInterrupt": KeyboardInterrupt()}
    errors["RuntimeError"] = RuntimeError("bug")
    try:
        with rundir.claim(run, resuming=False):
            assert (run / runlock.LOCK_FILE).exists()
            if how in errors:
                raise errors[how]
    except (UserError, KeyboardInterrupt, RuntimeError):
        pass
    assert not (run / runlock.LOCK_FILE).exists()
    with runlock.acquire(run) as lock:  # free, and nothing to take over
        assert lock.notes == []


def test_a_run_folder_made_for_a_run_that_never_began_is_removed(tmp_path):
    run = tmp_path / "out" / "run"
    with pytest.raises(UserError), rundir.claim(run, resuming=False):
        raise UserError("the data folder does not exist")
    assert not run.exists() and (tmp_path / "out").exists()


def test_a_file_system_that_cannot_lock_warns_and_goes_on(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock.fcntl, "flock", no_locks)
    with runlock.acquire(tmp_path) as lock:
        assert len(lock.notes) == 1 and "cannot lock files (No locks available)" in lock.notes[0]


def test_what_a_run_continues_from(tmp_path):
    run = tmp_path / "run"
    assert rundir.status(run) == "run" and rundir.resume_tag(run) is None
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)  # a first save cut off
    assert rundir.status(run) == "run"
    best = complete(run, "best")  # the first 'last' save cut off
    assert rundir.resume_tag(run) == "best" and rundir.status(run) == "resume"
    best.rename(run / "checkpoints" / ".best.old")  # cut off between the renames
    assert rundir.resume_tag(run) == "best"
    complete(run, "last", epoch=3)
    assert rundir.resume_tag(run) == "last"
    assert rundir.kept(run) == (
        f"{run / 'checkpoints' / 'last'} (resumes at epoch 3) and .best.old (after epoch 1)"
    )
    (run / "results.json").write_text("{}")
    assert rundir.status(run) == "done"


def test_resume_without_a_complete_checkpoint_says_how_to_start_afresh(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)
    with pytest.raises(UserError) as e, rundir.claim(run, resuming=True):
        pass
    assert str(e.value) == (
        f"--resume {run}: no complete checkpoint there (the run stopped before its first one "
        "was saved), so nothing to continue; start it afresh with: altgrad-train "
        f"{run / 'recipe.toml'} run.out_dir={run.parent} run.name=x"
    )
    complete(run, "best")
    with rundir.claim(run, resuming=True) as tag:
        assert tag == "best"
    assert "no complete 'last' checkpoint; resuming from 'best'" in capsys.readouterr().out


def test_a_fresh_start_takes_over_a_folder_without_a_complete_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)
    (run / "recipe.toml").write_text("")  # what marks it as a run's own folder
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with rundir.claim(run, resuming=False) as tag:
        assert tag is None
        assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    assert (run / "metrics.jsonl.old").read_text() == '{"epoch": 1}\n'
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "starting it afresh with a new metrics.jsonl" in out[0]


def test_a_fresh_start_refuses_a_folder_that_holds_a_run(tmp_path):
    run = tmp_path / "run"
    complete(run, "last")
    with pytest.raises(UserError, match=f"already holds a run: continue it with --resume {run}"):
        rundir.start_afresh(run)
    (run / "checkpoints").rename(tmp_path / "elsewhere")  # finished, checkpoints deleted
    (run / "results.json").write_text("{}")
    with pytest.raises(UserError, match=r"holds a finished run \(results.json\)"):
        rundir.start_afresh(run)


def test_folders_that_cannot_be_written_are_one_line_before_anything_loads(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(UserError) as e, rundir.claim(a_file / "run", resuming=False):
        pass
    assert str(e.value).startswith(f"run.out_dir: cannot write the run folder {a_file / 'run'}")
    assert "a file stands where a folder is needed" in str(e.value)
    sys_error = pytest.raises(UserError, match="run.out_dir: cannot write the run folder /sys/")
    with sys_error, rundir.claim("/sys/altgrad-run", resuming=False):
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path):
    out = tmp_path / "ro"
    out.mkdir(mode=0o555)
    denied = pytest.raises(UserError, match=r"cannot write the run folder .*Permission denied")
    with denied, rundir.claim(out / "run", resuming=False):
        pass


def test_a_failed_write_says_what_was_kept(tmp_path):
    run = tmp_path / "run"
    full = OSError(errno.ENOSPC, "No space left on device", str(run / "metrics.jsonl"))
    e = rundir.write_failure(full, run, "altgrad-train")
    assert e.exit_code == 1 and str(e) == (
        f"cannot write {run / 'metrics.jsonl'} (No space left on device); the run stopped "
        "before its first checkpoint, so nothing was kept; once that is fixed, the same "
        "command starts it afresh"
    )
    complete(run, "last", epoch=4)
    assert str(rundir.write_failure(full, run, "altgrad-train")).endswith(
        f"kept {run / 'checkpoints' / 'last'} (resumes at epoch 4) intact; once that is "
        f"fixed, continue with: altgrad-train --resume {run}"
    )


@pytest.mark.parametrize("name", ["metrics.jsonl", "results.json", "recipe.toml"])
@pytest.mark.parametrize("resuming", [True, False], ids=["resume", "fresh"])
def test_a_folder_where_the_run_writes_a_file_is_one_line_before_training(tmp_path, name, resuming):
    """Issue 32: a metrics.jsonl that is a folder failed at the end of the first epoch (a
    whole epoch wasted), exit 1 as if the disk had failed."""
    run = tmp_path / "run"
    complete(run, "last")
    (run / name / "kept").mkdir(parents=True)
    if not resuming:
        (run / "checkpoints").rename(tmp_path / "elsewhere")
    with pytest.raises(UserError) as e, rundir.claim(run, resuming=resuming):
        pass
    assert e.value.exit_code == 2 and str(e.value) == (
        f"{run / name}: a folder stands where the run writes its file {name}; move it "
        "away, then run again"
    )
    assert (run / name / "kept").is_dir()


@pytest.mark.parametrize(
    ("error", "code"),
    [(errno.ENOSPC, 1), (errno.EACCES, 2)],
    ids=["full disk", "forbidden folder"],
)
def test_a_full_disk_at_start_exits_1_a_forbidden_folder_2(tmp_path, monkeypatch, error, code):
    """Issue 32: a full disk (the lock cannot be written) exited 2, as a user's mistake."""
    from altgrad_triton.run import lock as runlock

    def fails(run_dir):
        raise OSError(error, os.strerror(error), str(run_dir / "train.lock"))

    monkeypatch.setattr(runlock, "acquire", fails)
    with (
        pytest.raises(UserError, match=os.strerror(error)) as e,
        rundir.claim(tmp_path / "run", resuming=False),
    ):
        pass
    assert e.value.exit_code == code
