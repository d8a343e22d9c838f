"""A checkpoint folder written atomically and read back checked.

It is written into a hidden staging folder and renamed into place; the previous
checkpoint of the same tag is renamed aside first and deleted last, so a crash at any
moment leaves either the old or the new checkpoint complete (``layout.find`` finds either).
Only what a save wrote is replaced or removed: a folder there that holds anything else (a
run someone made inside a checkpoint) is a UserError, and stays as it is.
A save that fails (a full disk) deletes its staging folder and raises an OSError naming
the file; the previous checkpoint stays as it was.

What is read back is checked before it is used: each file is what it claims
(``meta.json`` an object with ``model_shape``, ``trainer.pt`` a dict with the trainer's
keys); anything unreadable is one UserError naming the folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors.torch import load_file

from ...errors import UserError, one_line
from ...files import read_json, write_file
from . import layout
from .contents import TRAINER_KEYS, Checkpoint, TrainerState


def write(
    directory: Path,
    *,
    model: torch.nn.Module,
    synthesizer: torch.nn.Module | None,
    meta: dict[str, Any],
    trainer: TrainerState,
) -> None:
    """Write a complete checkpoint to ``directory`` atomically (see the module docstring)."""
    directory = Path(directory)
    tmp, old = layout.staging(directory), layout.set_aside(directory)
    for path in (directory, old, tmp):  # each replaced or removed below: ours only
        what = layout.foreign(path)
        if what is not None:
            run = directory.parent.parent
            raise UserError(
                f"{layout.not_a_checkpoint(path, what)}, then continue with --resume {run}"
            )
    directory.parent.mkdir(parents=True, exist_ok=True)
    if not directory.exists() and (old / layout.META).exists():
        os.replace(old, directory)  # a save cut off between its renames: keep that one
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:  # each file flushed to disk before the rename makes it visible
        _write_tensors(tmp / layout.MODEL, model)
        if synthesizer is not None:
            _write_tensors(tmp / layout.SYNTHESIZER, synthesizer)
        state = trainer.to_dict()
        write_file(tmp / layout.TRAINER, lambda f: torch.save(state, f))
        text = json.dumps(meta, indent=2, sort_keys=True)
        write_file(tmp / layout.META, lambda f: f.write(text.encode()))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
        raise
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _write_tensors(path: Path, module: torch.nn.Module) -> None:
    # Tied weights share storage, which safetensors refuses: store clones. Serialised in
    # memory and written by Python, so a failed write is an OSError naming the file
    # (safetensors' own writer raises an error type of its own).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    data = safetensors.torch.save(tensors)
    write_file(path, lambda f: f.write(data))


def read(directory: Path) -> Checkpoint:
    """The checkpoint at ``directory`` (or the one a cut-off save set aside); UserError if
    there is none, or if any part of it is unreadable."""
    found = layout.find(directory)
    if found is None:
        raise UserError(
            f"{directory}: no checkpoint there (expected {layout.META}, "
            f"{layout.MODEL} and {layout.TRAINER})"
        )
    try:
        meta = read_json(found / layout.META, required=("model_shape",))
        model = load_file(str(found / layout.MODEL))
        synth_path = found / layout.SYNTHESIZER
        synth = load_file(str(synth_path)) if synth_path.exists() else None
        trainer = TrainerState.from_dict(_read_trainer(found / layout.TRAINER))
    except Exception as e:  # any unreadable part means the checkpoint is unusable
        detail = str(e) if isinstance(e, UserError) else one_line(e, limit=200)
        raise UserError(f"{found}: checkpoint is corrupt or incomplete ({detail})") from None
    return Checkpoint(meta, model, synth, trainer, found)


def _read_trainer(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds a {type(state).__name__}, not a dict")
    missing = [k for k in TRAINER_KEYS if k not in state]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(map(repr, missing))}")
    return state
