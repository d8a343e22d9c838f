"""The run folder: the name of everything a run keeps there (``RunFolder``), whether it holds
a run to continue, a fresh start's clean slate, and what a failed write left.

    <run>/recipe.toml  metrics.jsonl  results.json  probe.jsonl  probe-<split>.json
    <run>/train.lock (lock.py)  tensorboard/
    <run>/checkpoints/best/  last/  (their names on disk: ``checkpoint/layout.py``)

A run continues from its last complete checkpoint. A folder without one (a run killed, out
of disk, or Ctrl-C'd twice while its first checkpoint was written) holds nothing to
continue: a fresh start takes it over with fresh files (never appending to the old
``metrics.jsonl``), and ``--resume`` says so and how to start afresh. A new run folder lies
outside every other run's folder and every checkpoint, whose next save would replace it with
everything in it (``check_place``); and no save replaces or removes a checkpoint folder that
holds more than a save wrote (``layout.foreign``). Torch-free, so that
altgrad-suite decides each run's status without importing torch.
"""

from __future__ import annotations

import contextlib
import errno
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import UserError, one_line
from ..files import read_json
from . import lock as runlock
from .checkpoint import layout


@dataclass(frozen=True)
class RunFolder:
    """One run's folder, and the path of each thing a run keeps in it.

    The one place where those names are spelled, so that the trainer that writes a run and
    every tool that reads one (report, suite, eval, probe, bench) agree, and a name changes
    in one line. The lock file's name is ``lock.py``'s and the checkpoints' are
    ``checkpoint/layout.py``'s, each beside the code that writes them; this object hands
    them out with the rest."""

    path: Path

    RECIPE: ClassVar[str] = "recipe.toml"
    METRICS: ClassVar[str] = "metrics.jsonl"
    RESULTS: ClassVar[str] = "results.json"
    EPOCH_PROBES: ClassVar[str] = "probe.jsonl"
    TENSORBOARD: ClassVar[str] = "tensorboard"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str is taken too

    @property
    def name(self) -> str:
        """The run's name: its folder's (``run.name``)."""
        return self.path.name

    @property
    def recipe(self) -> Path:
        """The resolved recipe, written as the run starts: what a resume continues with."""
        return self.path / self.RECIPE

    @property
    def metrics(self) -> Path:
        """One JSON line per finished epoch (``metrics.MetricsLog``)."""
        return self.path / self.METRICS

    @property
    def old_metrics(self) -> Path:
        """Where a fresh start sets aside the lines of a run that kept no checkpoint."""
        return self.path / f"{self.METRICS}.old"

    @property
    def results(self) -> Path:
        """The best validation and the test loss, written last: the run is done."""
        return self.path / self.RESULTS

    @property
    def epoch_probes(self) -> Path:
        """The truncation probe's record of every probed epoch (``[probe] every = N``)."""
        return self.path / self.EPOCH_PROBES

    def probe(self, split: str) -> Path:
        """altgrad-probe's record of a checkpoint on ``split`` (its default ``--out``)."""
        return self.path / f"probe-{split}.json"

    @property
    def lock(self) -> Path:
        """The file the writer holds locked while it runs (``lock.py``)."""
        return self.path / runlock.LOCK_FILE

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's event files (``run.tensorboard``)."""
        return self.path / self.TENSORBOARD

    @property
    def checkpoints(self) -> Path:
        """The folder of the run's checkpoints (``checkpoint/layout.py``)."""
        return self.path / layout.FOLDER

    def checkpoint(self, tag: str) -> Path:
        """The folder of checkpoint ``tag`` (``best`` or ``last``)."""
        return layout.directory(self.path, tag)


def resume_tag(run_dir: str | Path) -> str | None:
    """The checkpoint a run continues from: ``last``; ``best`` when only it is complete (a
    run stopped while its first ``last`` was saved, right after the first ``best``, which
    holds the same state); None when the run has no complete checkpoint."""
    for tag in ("last", "best"):
        if layout.find(RunFolder(run_dir).checkpoint(tag)) is not None:
            return tag
    return None


def status(run_dir: str | Path) -> str:
    """``done`` (results.json), ``resume`` (a complete checkpoint) or ``run`` (nothing to
    continue: a fresh start, which takes over what a stopped first save left)."""
    if RunFolder(run_dir).results.exists():
        return "done"
    return "resume" if resume_tag(run_dir) else "run"


@contextlib.contextmanager
def claim(run_dir: str | Path, *, resuming: bool, writer: bool = True) -> Iterator[str | None]:
    """Hold ``run_dir`` for one run; yields the tag of the checkpoint to resume from (None for
    a fresh start).

    A fresh run's folder may not lie inside another run's folder or a checkpoint
    (``check_place``). The writer (rank 0 under torchrun) locks the folder, which also proves
    it writable before any data is loaded, and prepares it: checkpoint folders that hold more
    than a save wrote are refused (no save replaces them), and so are folders where the run
    writes a file (``RUN_OWN_FILES``); a fresh start refuses a folder that
    holds a run and clears what a run without a complete checkpoint left. Notes go to stdout,
    one line each.
    """
    run_dir = Path(run_dir)
    if not resuming:
        check_place(run_dir)
    if not writer:
        yield _resumable(run_dir) if resuming else None
        return
    try:
        lock = runlock.acquire(run_dir)
    except OSError as e:
        raise UserError(unwritable(run_dir, e, resuming), exit_code=failure_code(e)) from None
    with lock:
        for note in lock.notes:
            print(note, flush=True)
        try:
            _check_checkpoint_folders(run_dir)
            _check_run_files(run_dir)
            tag = _resumable(run_dir) if resuming else None
            notes = [] if resuming else start_afresh(run_dir)
        except OSError as e:
            raise UserError(unwritable(run_dir, e, resuming), exit_code=failure_code(e)) from None
        if tag == "best":
            notes.append(f"note: {run_dir} has no complete 'last' checkpoint; resuming from 'best'")
        for note in notes:
            print(note, flush=True)
        yield tag


RUN_MARKS = (RunFolder.METRICS, RunFolder.RESULTS, runlock.LOCK_FILE)
"""What a run writes beside its recipe.toml, with its checkpoints: a folder with a
recipe.toml and one of them is a run's (a recipe.toml alone is a user's recipe)."""


def is_run(folder: Path) -> bool:
    """Whether ``folder`` is a run's folder (``RUN_MARKS``, or a checkpoint place)."""
    run = RunFolder(folder)
    if not run.recipe.is_file():
        return False
    places = (run.checkpoints / name for name in layout.ENTRIES)
    return any((folder / f).exists() for f in RUN_MARKS) or any(p.exists() for p in places)


def _checkpoint_file(folder: Path) -> str | None:
    """The meta.json of a checkpoint at ``folder`` (with its model or trainer file beside
    it: a model.safetensors alone is any model's), or None."""
    if not (folder / layout.META).is_file():
        return None
    others = (layout.MODEL, layout.TRAINER)
    return layout.META if any((folder / f).is_file() for f in others) else None


def check_place(run_dir: Path) -> None:
    """UserError unless a fresh run folder at ``run_dir`` lies outside every other run's
    folder and every checkpoint, and is not a checkpoint itself: a save replaces a
    checkpoint folder whole, with whatever else was put there (issue 32: a run made in
    another run's ``checkpoints/best`` was deleted by that run's next save)."""
    here = Path(run_dir).resolve()
    allowed = "a run.out_dir outside every run folder and checkpoint"
    for folder in reversed(here.parents):  # the outermost first: out of it is out of all
        kind = "run folder" if is_run(folder) else "checkpoint" if _checkpoint_file(folder) else ""
        if kind:
            raise UserError(
                f"run.out_dir={run_dir.parent}: inside the {kind} {folder}, which altgrad-train "
                f"manages (a save replaces a checkpoint folder whole); give {allowed}, "
                f"e.g. {folder.parent}"
            )
    held = _checkpoint_file(here)
    if held:
        raise UserError(
            f"run.name={run_dir.name}: the run folder {run_dir} would be a checkpoint (it holds "
            f"{held}), which a save replaces whole; give another run.name=... or {allowed}"
        )


def check_output(path: str | Path, option: str, *, folder: bool) -> None:
    """Before a command's work, that it can write its output ``path`` (a ``folder``, or a
    file) there: a UserError inside a run's ``checkpoints/`` or a checkpoint (a save replaces
    those whole, and a resume refuses one holding what a save did not write); the OSError,
    naming the place, that the write would meet (a file in the way, ``/proc/x``, a read-only
    disk), now rather than after minutes of work. Nothing is created: the nearest existing
    folder is tried with a temporary folder."""
    here = Path(path).expanduser().resolve()
    for place in (here, *here.parents):
        if (place.name == layout.FOLDER and is_run(place.parent)) or _checkpoint_file(place):
            raise UserError(
                f"{option} {path}: inside {place}, which altgrad-train manages (a save "
                "replaces a checkpoint whole); write it outside the checkpoints"
            )
    if not folder and here.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    existing = next(p for p in (here if folder else here.parent, *here.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(existing))
    try:
        Path(tempfile.mkdtemp(dir=existing, prefix=".altgrad-write-test-")).rmdir()
    except OSError as e:  # named by the user's path, not the test folder's
        raise OSError(e.errno, f"cannot write in {existing} ({e.strerror})", str(path)) from None


def _check_checkpoint_folders(run_dir: Path) -> None:
    """UserError if a folder where a save writes (or removes) a checkpoint holds anything
    a save did not write: refused before the run begins, not at its first save."""
    checkpoints = RunFolder(run_dir).checkpoints
    for name in layout.ENTRIES:
        path = checkpoints / name
        what = layout.foreign(path)
        if what is not None:
            raise UserError(f"{layout.not_a_checkpoint(path, what)}, then run again")


RUN_OWN_FILES = (RunFolder.RECIPE, RunFolder.METRICS, RunFolder.RESULTS)
"""The files a run writes in its folder (besides its checkpoints and lock)."""


def _check_run_files(run_dir: Path) -> None:
    """UserError if a folder stands where the run writes a file: its write would fail only
    at the end of an epoch (a whole epoch lost), looking like a failed disk."""
    for name in RUN_OWN_FILES:
        path = run_dir / name
        if path.is_dir():
            raise UserError(
                f"{path}: a folder stands where the run writes its file {name}; move it "
                "away, then run again"
            )


MACHINE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)
"""Write errors that are the machine's state, not a mistake in what was asked: a full disk,
a quota, a failing device. They exit 1, as a failed write during a run does; a folder the
user may not write (a mistake in run.out_dir) exits 2."""


def failure_code(error: OSError) -> int:
    """The exit code of a run folder that cannot be written (``MACHINE_FAULTS``: 1; else 2)."""
    return 1 if error.errno in MACHINE_FAULTS else 2


def unwritable(run_dir: Path, error: OSError, resuming: bool) -> str:
    """The one line for a run folder that cannot be created or written."""
    cause = error.strerror or one_line(error)
    if isinstance(error, FileExistsError | NotADirectoryError):
        cause = f"{cause}: a file stands where a folder is needed"
    if error.filename and str(error.filename) != str(run_dir):
        cause = f"{error.filename}: {cause}"
    if resuming:
        return f"--resume {run_dir}: cannot write there ({cause}); a resumed run writes there"
    return (
        f"run.out_dir: cannot write the run folder {run_dir} ({cause}); "
        "give a writable run.out_dir=..."
    )


def _resumable(run_dir: Path) -> str:
    tag = resume_tag(run_dir)
    if tag is None:
        again = shlex.join(
            [
                "altgrad-train",
                str(RunFolder(run_dir).recipe),
                f"run.out_dir={run_dir.parent}",
                f"run.name={run_dir.name}",
            ]
        )
        raise UserError(
            f"--resume {run_dir}: no complete checkpoint there (the run stopped before its "
            f"first one was saved), so nothing to continue; start it afresh with: {again}"
        )
    return tag


def start_afresh(run_dir: Path) -> list[str]:
    """Make ``run_dir`` ready for a fresh run; notes (one line each) on what was set aside.

    Refused (UserError) if it holds a run: a complete checkpoint, or results.json. What a run
    without a complete checkpoint left goes: the checkpoint folder (incomplete saves only),
    and ``metrics.jsonl``, kept as ``metrics.jsonl.old`` (its epochs have no weights), so the
    new run's lines never mix with the old ones.
    """
    if resume_tag(run_dir) is not None:
        raise UserError(
            f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
            "or pick another run.name=... or run.out_dir=..."
        )
    folder = RunFolder(run_dir)
    if folder.results.exists():
        raise UserError(
            f"{run_dir} holds a finished run ({folder.RESULTS}) without a checkpoint to "
            "continue; pick another run.name=... or run.out_dir=..., or delete "
            f"{run_dir} to train it again"
        )
    notes = []
    if folder.metrics.exists():
        folder.metrics.replace(folder.old_metrics)
        notes.append(
            f"note: {run_dir} holds no complete checkpoint: starting it afresh with a new "
            f"{folder.metrics.name} (the old one, whose epochs have no checkpoint, is "
            f"{folder.old_metrics.name})"
        )
    _remove_own_checkpoints(run_dir)
    return notes


def _remove_own_checkpoints(run_dir: Path) -> None:
    """Remove the incomplete checkpoints a stopped run left, and nothing else: only in a
    folder a run marked as its own (its recipe.toml), only the entries a checkpoint save
    writes (``layout.ENTRIES``) holding only what a save writes (``layout.foreign``); the
    checkpoints folder itself only once empty. Whatever
    else lives there (a finished run that someone named ``checkpoints`` one level up) is
    not this run's."""
    run = RunFolder(run_dir)
    folder = run.checkpoints
    if not run.recipe.is_file() or not folder.is_dir() or folder.is_symlink():
        return
    for name in layout.ENTRIES:
        entry = folder / name
        if entry.is_dir() and layout.foreign(entry) is None:  # not a link, only saved files
            shutil.rmtree(entry, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: something that is not ours
        folder.rmdir()


def kept(run_dir: str | Path) -> str | None:
    """The complete checkpoints of ``run_dir`` as a phrase, e.g. ``runs/x/checkpoints/last
    (resumes at epoch 3) and best (after epoch 1)``; None if there is none."""
    found = []
    for tag, when in (("last", "resumes at epoch {}"), ("best", "after epoch {}")):
        path = layout.find(RunFolder(run_dir).checkpoint(tag))
        if path is None:
            continue
        try:  # meta.json's epoch is the next one to run
            epoch = int(read_json(path / layout.META)["epoch"])
            detail = " (" + when.format(epoch if tag == "last" else epoch - 1) + ")"
        except (OSError, UserError, KeyError, TypeError, ValueError):
            detail = ""
        found.append(f"{path if not found else path.name}{detail}")
    return " and ".join(found) or None


def write_failure(error: OSError, run_dir: str | Path, command: str) -> UserError:
    """The one line for a write that failed during a run (a full disk, a mount turned
    read-only): what failed, what was kept, how to go on. ``command`` starts the trainer."""
    where = error.filename or run_dir
    cause = f"cannot write {where} ({error.strerror or one_line(error)})"
    saved = kept(run_dir)
    if saved is None:
        return UserError(
            f"{cause}; the run stopped before its first checkpoint, so nothing was kept; "
            "once that is fixed, the same command starts it afresh",
            exit_code=1,
        )
    return UserError(
        f"{cause}; the run stopped and kept {saved} intact; once that is fixed, continue "
        f"with: {command} --resume {run_dir}",
        exit_code=1,
    )
