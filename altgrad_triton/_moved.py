"""Where the modules of the flat layout (before the wings) live now, so that code written
against the old paths keeps working: ``from altgrad_triton.train import Trainer``,
``import altgrad_triton.synthesizers`` and ``monkeypatch.setattr("altgrad_triton.model.X", ...)``
give the module at its new home (the same module object, not a copy).

An import hook rather than 34 stub files: a stub per old name would put the flat layout back
on disk, and a stub that re-exports would be a second module object that a patch misses."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

PACKAGE = __name__.rpartition(".")[0]

MOVED = {
    "asgd": "core.asgd",
    "boundary": "core.boundary",
    "carry": "core.carry",
    "cells": "core.cells",
    "model": "core.model",
    "pointer": "core.pointer",
    "schedule": "core.schedule",
    "synthesizers": "core.synthesizers",
    "tbptt": "core.tbptt",
    "backends": "config.backends",
    "catalog": "config.catalog",
    "legacy_keys": "config.legacy_keys",
    "names": "config.names",
    "recipe": "config.recipe",
    "board": "run.board",
    "build": "run.build",
    "checkpoint": "run.checkpoint",
    "distributed": "run.distributed",
    "evaluation": "run.evaluation",
    "inference": "run.inference",
    "kernel_check": "run.kernel_check",
    "memory": "run.memory",
    "metrics": "run.metrics",
    "rundir": "run.folder",
    "runlock": "run.lock",
    "train": "run.train",
    "tune.store": "run.winners",
    "probe_run": "probe.on_run",
    "probe_fit": "probe.fit",
    "probe_epochs": "probe.per_epoch",
    "probe_copy": "experiments.horizon_probe",
    "horizon": "experiments.horizon",
    "suite": "experiments.suite",
    "doctor": "tune.doctor",
}
"""Old module path -> new one, both under the package; a moved package's modules follow it."""


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Already executed at its new home."""


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds an old module path and hands over the module at its new one. First on
    ``sys.meta_path``: a module of a moved package (``checkpoint.checks``) would otherwise be
    found a second time, under its old name, in the package's folder."""

    def find_spec(self, fullname: str, path=None, target=None):
        new = new_path(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _Alias(new))


def new_path(fullname: str) -> str | None:
    """The module path that ``fullname`` moved to, or None if it did not move."""
    old = fullname.removeprefix(PACKAGE + ".")
    if old == fullname:
        return None
    head, rest = old, ""
    while head not in MOVED:
        if "." not in head:
            return None
        head, _, leaf = head.rpartition(".")
        rest = f".{leaf}{rest}"
    return f"{PACKAGE}.{MOVED[head]}{rest}"


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once."""
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModules())
