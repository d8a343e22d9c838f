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


def find(directory: str | Path) -> Path | None:
    """The complete checkpoint at ``directory``, or the previous one if a save was cut off
    between its two renames; None if neither is complete (``meta.json`` is written last)."""
    directory = Path(directory)
    if (directory / META).exists():
        return directory
    old = set_aside(directory)
    return old if (old / META).exists() else None
