"""Checkpoints: safetensors weights, a JSON sidecar, and the trainer state; written atomically.

A checkpoint is a directory ``<run>/checkpoints/<tag>/`` holding

* ``model.safetensors`` and (with synthetic gradients) ``synthesizer.safetensors``;
* ``meta.json``: the resolved recipe, the model-shape keys, epoch, metrics, vocabulary;
* ``trainer.pt``: optimizer states, RNG states and the in-epoch position (carried state,
  partial sums), so a resumed run continues exactly, even from an interrupted epoch.

It is written into a hidden temporary directory and renamed into place; the previous
checkpoint of the same tag is renamed aside first and deleted last, so a crash at any
moment leaves either the old or the new checkpoint complete (``load`` finds either).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError, one_line


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Tied weights share storage; safetensors refuses shared tensors, so store clones.
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def save(
    directory: Path,
    *,
    model: torch.nn.Module,
    synthesizer: torch.nn.Module | None,
    meta: dict[str, Any],
    trainer_state: dict[str, Any],
) -> None:
    """Write a complete checkpoint to ``directory`` atomically (see the module docstring)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp"
    old = directory.parent / f".{directory.name}.old"
    if not directory.exists() and (old / "meta.json").exists():
        os.replace(old, directory)  # a save cut off between its renames: keep that one
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_tensors(model), str(tmp / "model.safetensors"))
    if synthesizer is not None:
        save_file(_tensors(synthesizer), str(tmp / "synthesizer.safetensors"))
    torch.save(trainer_state, tmp / "trainer.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    for f in tmp.iterdir():  # data on disk before the rename makes it visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def find(directory: Path) -> Path | None:
    """The complete checkpoint at ``directory``, or the previous one if a save was cut off."""
    directory = Path(directory)
    if (directory / "meta.json").exists():
        return directory
    old = directory.parent / f".{directory.name}.old"
    return old if (old / "meta.json").exists() else None


def load(
    directory: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """(meta, model tensors, synthesizer tensors or None, trainer state); UserError if broken."""
    found = find(directory)
    if found is None:
        raise UserError(
            f"{directory}: no checkpoint there (expected meta.json, "
            "model.safetensors and trainer.pt)"
        )
    try:
        meta = json.loads((found / "meta.json").read_text())
        model = load_file(str(found / "model.safetensors"))
        synth_path = found / "synthesizer.safetensors"
        synth = load_file(str(synth_path)) if synth_path.exists() else None
        state = torch.load(found / "trainer.pt", map_location="cpu", weights_only=False)
    except Exception as e:  # any unreadable part means the checkpoint is unusable
        raise UserError(
            f"{found}: checkpoint is corrupt or incomplete ({one_line(e, limit=200)})"
        ) from None
    return meta, model, synth, state


def shape_mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Keys whose values differ between a checkpoint's model shape and a recipe's.

    A key the checkpoint does not record (written before the key was checked) is not
    compared, so older checkpoints still resume.
    """
    return [
        f"{k}: checkpoint {saved[k]!r} vs recipe {wanted.get(k)!r}"
        for k in sorted(saved)
        if saved[k] != wanted.get(k)
    ]
