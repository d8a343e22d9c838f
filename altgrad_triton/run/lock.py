"""One writer per run folder: a lock held for the life of the process that writes it.

Two trainers writing one run folder interleave their metrics lines and overwrite each
other's checkpoints, and both exit 0. So the writer holds ``train.lock`` in the folder;
a second one gets one line naming the holder's pid and host.

The lock is the kernel's (``flock`` on the file), not the file's existence: the kernel drops
it when its process ends, however it ends (a SIGKILL, a crash, an out-of-memory kill), so a
file left behind by a dead writer never blocks the next run, and a pid that another process
reuses (containers restart at low pids) cannot pass for a live holder. The file holds the
writer's pid and host only for messages: a file left by a dead writer is taken over with a
one-line note naming it. Under torchrun only rank 0 writes, so only rank 0 locks. On a file
system that cannot lock (some network mounts) the run goes on, with a warning.

The file is deleted before the lock is dropped; a writer that opened it in between finds
it no longer at its path once it holds the lock, and opens the new one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from pathlib import Path

from ..errors import UserError

LOCK_FILE = "train.lock"


class RunLock:
    """The lock on one run folder, held from ``acquire`` to ``release`` (or the ``with``)."""

    def __init__(self, path: Path, fd: int, notes: list[str], created_folder: bool):
        self.path, self._fd = path, fd
        self.notes = notes  # one line each: a lock taken over, a file system that cannot lock
        self._created_folder = created_folder

    def release(self) -> None:
        """Delete the lock file, then drop the lock; and the run folder, if this lock created
        it and nothing else was written there (a run that failed before it began)."""
        if self._fd < 0:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1
        if self._created_folder:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                self.path.parent.rmdir()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(run_dir: str | Path) -> RunLock:
    """Lock ``run_dir`` for this process, creating the folder if need be.

    A UserError naming the holder if another live process holds it; an OSError if the
    folder cannot be created or written (the caller says which key to change).
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    notes: list[str] = []
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise UserError(
                f"{run_dir} is in use by {holder}: one run folder takes one writer; wait "
                "for that run to end (or stop it), or give this one another run.name=... "
                "or run.out_dir=..."
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            notes.append(
                f"warning: {path}: this file system cannot lock files ({e.strerror}); make "
                f"sure no other altgrad-train writes to {run_dir}"
            )
            break
        if _is_at(fd, path):
            break
        os.close(fd)  # its holder deleted it while releasing: lock the file there now
    previous = _read(fd)
    if previous:  # a writer that ended without releasing (killed): the kernel freed its lock
        notes.append(f"note: taking over {path}, left by {_describe(previous)}, which has ended")
    lock = RunLock(path, fd, notes, created)
    try:
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode() + b"\n", 0)
        os.fsync(fd)
    except OSError as e:
        lock.release()
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        lock.release()
        raise
    return lock


def _is_at(fd: int, path: Path) -> bool:
    try:
        here = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()


def _describe(text: str) -> str:
    """The holder a lock file names, for a message."""
    try:
        holder = json.loads(text)
        return f"altgrad-train pid {int(holder['pid'])} on {holder['host']}"
    except (ValueError, TypeError, KeyError):
        return "another process (its lock file names none yet)"
