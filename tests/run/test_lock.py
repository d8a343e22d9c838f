"""The run folder's lock (``run/lock.py``): one writer between real processes, a dead one's
lock taken over, released on every way out, and a file system that cannot lock."""

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


def test_a_file_system_that_cannot_lock_warns_and_goes_on(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock.fcntl, "flock", no_locks)
    with runlock.acquire(tmp_path) as lock:
        assert len(lock.notes) == 1 and "cannot lock files (No locks available)" in lock.notes[0]
