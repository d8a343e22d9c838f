"""Where checkpoints live on disk: the only code that knows their folder and file names.

    <run>/checkpoints/<tag>/   model.safetensors  synthesizer.safetensors  meta.json  trainer.pt
    <run>/checkpoints/.<tag>.tmp/   a save being written (renamed to <tag> when complete)
    <run>/checkpoints/.<tag>.old/   the previous <tag>, set aside while it is replaced

Torch-free, so that ``rundir.py`` (and altgrad-suite through it) tells a run's status
without importing torch.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = "checkpoints"
TAGS = ("best", "last")
MODEL = "model.safetensors"
SYNTHESIZER = "synthesizer.safetensors"
META = "meta.json"
TRAINER = "trainer.pt"

FILES = (MODEL, SYNTHESIZER, META, TRAINER)
"""All a save writes in a checkpoint folder: a folder holding anything else is not one."""

ENTRIES = tuple(name for tag in TAGS for name in (tag, f".{tag}.tmp", f".{tag}.old"))
"""What a save leaves in a run's checkpoints folder, and all a fresh start removes."""


def directory(run_dir: str | Path, tag: str) -> Path:
    """The folder of checkpoint ``tag`` of the run at ``run_dir``."""
    return Path(run_dir) / FOLDER / tag


def staging(directory: Path) -> Path:
    """Where a save of ``directory`` is written before it is renamed into place."""
    return directory.parent / f".{directory.name}.tmp"


def set_aside(directory: Path) -> Path:
    """Where the previous checkpoint waits while a save replaces it."""
    return directory.parent / f".{directory.name}.old"


def foreign(directory: str | Path) -> str | None:
    """What makes ``directory`` not a checkpoint folder as a save writes it, as a phrase
    for ``not_a_checkpoint``; None if it is one, or absent (a save may replace or remove it).

    A save replaces its tag's folder whole, so it replaces only what it wrote: a folder of
    ``FILES`` (some of them, for a save cut off), not a link and nothing else."""
    directory = Path(directory)
    if directory.is_symlink():
        return "a symbolic link"
    if not directory.exists():
        return None
    if not directory.is_dir():
        return "a file"
    for entry in sorted(directory.iterdir()):
        if entry.name not in FILES or entry.is_symlink() or not entry.is_file():
            return repr(entry.name)
    return None


def not_a_checkpoint(directory: str | Path, what: str) -> str:
    """The line for a folder where a checkpoint goes that is not one (``foreign``'s
    ``what``), which no save replaces or removes."""
    if what.startswith("a "):
        return (
            f"{directory}: {what}, not a checkpoint folder that altgrad-train wrote; a save "
            "replaces that folder whole, so it stops instead: move it away"
        )
    return (
        f"{directory}: not only a checkpoint: it also holds {what} (a checkpoint holds "
        f"{', '.join(FILES)}), which a save would delete with it, so it stops instead: "
        "move what is not a checkpoint file out of it"
    )


def find(directory: str | Path) -> Path | None:
    """The complete checkpoint at ``directory``, or the previous one if a save was cut off
    between its two renames; None if neither is complete (``meta.json`` is written last)."""
    directory = Path(directory)
    if (directory / META).exists():
        return directory
    old = set_aside(directory)
    return old if (old / META).exists() else None
