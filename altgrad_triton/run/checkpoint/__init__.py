"""Checkpoints: one :class:`Checkpointer` saves, finds, loads, checks and restores them.

A checkpoint is a folder ``<run>/checkpoints/<tag>/`` (``layout``) holding

* ``model.safetensors`` and (with synthetic gradients) ``synthesizer.safetensors``;
* ``meta.json``: the resolved recipe, the model-shape keys, epoch, metrics, vocabulary;
* ``trainer.pt``: where the run stands (next epoch, best validation loss, the in-epoch
  sums and carried state, NT-ASGD's validation history and switch), the synthesizer's
  carry, the optimizer states, every RNG stream (per rank under torchrun) and the kernels'
  launch configs, so a resumed run continues exactly, even from an interrupted epoch.

Modules: ``layout`` (names on disk, torch-free), ``contents`` (:class:`Checkpoint` and
the typed parts of ``trainer.pt``), ``store`` (atomic write, checked read), ``checks``
(against a recipe and this run's shapes), ``checkpointer`` (:class:`Checkpointer`).

The names below are imported on first use, so that ``rundir.py`` reads ``layout``
without importing torch (altgrad-suite decides a run's status with it).
"""

from importlib import import_module
from typing import Any

_HOMES = {
    "Checkpointer": "checkpointer",
    "Checkpoint": "contents",
    "RunState": "contents",
    "TrainerState": "contents",
    "RngStates": "contents",
    "start_averaging": "contents",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
