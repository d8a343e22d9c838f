"""Stored winners: the cache dir, ``winners.json``, and forcing its entries back on the
device they were measured on.

Cache dir: ``--cache-dir``, else ``$ALTGRAD_TUNE_DIR``, else ``~/.cache/altgrad-triton/tune``.

``winners.json``::

    {"format": "altgrad-tune winners v1",
     "entries": [{"device": "NVIDIA H100 80GB HBM3", "capability": [9, 0], "triton": "3.6.0",
                  "kernel": "fo_pool_fwd", "key": ["bfloat16", 32768],
                  "dtype": "bfloat16", "bucket": 32768,
                  "meta": {"BLOCK": 256, "num_warps": 2, "num_stages": 1},
                  "median_ms": 0.031, "p20_ms": 0.030, "p80_ms": 0.032,
                  "shape": "B=20 T=200 H=1550 (f, z, o strided)", "candidates": 11,
                  "torch": "2.11.0", "date": "2025-01-31T12:00:00+00:00"}, ...]}

An entry is identified by (device, capability, triton, kernel, key); saving again replaces
entries with the same identity and keeps every other one (other GPUs, other versions).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..files import write_text_atomic

CACHE_ENV = "ALTGRAD_TUNE_DIR"
WINNERS_FILE = "winners.json"
FORMAT = "altgrad-tune winners v1"


def kernel_tuning():
    """The kernels' tuning registry, imported on first use (it imports torch and triton)."""
    from ..kernels import tuning as c  # importing the package registers every kernel

    return c


# ----------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceId:
    """What a stored winner is valid for."""

    name: str
    capability: tuple[int, int]
    triton: str


def triton_version() -> str:
    import triton

    return triton.__version__


def present_device(device: torch.device | str | None = None) -> DeviceId | None:
    """The CUDA device ``device`` names (default: the current one), or None without CUDA."""
    device = torch.device("cuda" if device is None else device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return DeviceId(torch.cuda.get_device_name(index), (int(major), int(minor)), triton_version())


# ----------------------------------------------------------------------------- cache file


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$ALTGRAD_TUNE_DIR``, else ``~/.cache/altgrad-triton/tune``."""
    if explicit not in (None, ""):
        return Path(explicit).expanduser()
    env = os.environ.get(CACHE_ENV, "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "altgrad-triton" / "tune"


def winners_path(directory: str | os.PathLike[str] | None = None) -> Path:
    return cache_dir(directory) / WINNERS_FILE


@dataclass(frozen=True)
class Winner:
    """One stored winner: a forced config for ``(kernel, key)`` on one device/Triton."""

    device: str
    capability: tuple[int, int]
    triton: str
    kernel: str
    key: tuple
    meta: dict[str, int]
    median_ms: float | None = None
    p20_ms: float | None = None
    p80_ms: float | None = None
    shape: str = ""
    candidates: int = 0
    torch: str = ""
    date: str = ""

    def identity(self) -> tuple:
        return (self.device, tuple(self.capability), self.triton, self.kernel, tuple(self.key))

    def to_json(self) -> dict[str, Any]:
        key = list(self.key)
        return {
            "device": self.device,
            "capability": list(self.capability),
            "triton": self.triton,
            "kernel": self.kernel,
            "key": key,
            "dtype": key[0] if key else None,
            "bucket": key[1] if len(key) > 1 else None,
            "meta": dict(self.meta),
            "median_ms": self.median_ms,
            "p20_ms": self.p20_ms,
            "p80_ms": self.p80_ms,
            "shape": self.shape,
            "candidates": self.candidates,
            "torch": self.torch,
            "date": self.date,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Winner:
        try:
            cap = d["capability"]
            meta = d["meta"]
            if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in meta.items()
            ):
                raise ValueError(f"meta must map names to integers, got {meta!r}")
            return cls(
                device=str(d["device"]),
                capability=(int(cap[0]), int(cap[1])),
                triton=str(d["triton"]),
                kernel=str(d["kernel"]),
                key=tuple(d["key"]),
                meta=dict(meta),
                median_ms=d.get("median_ms"),
                p20_ms=d.get("p20_ms"),
                p80_ms=d.get("p80_ms"),
                shape=str(d.get("shape", "")),
                candidates=int(d.get("candidates", 0)),
                torch=str(d.get("torch", "")),
                date=str(d.get("date", "")),
            )
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"bad winner entry {d!r}: {type(e).__name__}: {e}") from None


def load_winners(path: str | os.PathLike[str]) -> list[Winner]:
    """Entries of a winners file; [] when it does not exist. ValueError when malformed."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: expected an object with an 'entries' list")
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return [Winner.from_json(e) for e in data["entries"]]


def save_winners(path: str | os.PathLike[str], new: Sequence[Winner]) -> Path:
    """Merge ``new`` into the file at ``path`` (same identity replaced), atomically."""
    path = Path(path)
    try:
        old = load_winners(path)
    except ValueError as e:
        warnings.warn(f"{e}; starting a fresh winners file", stacklevel=2)
        old = []
    merged = {w.identity(): w for w in old}
    for w in new:
        merged[w.identity()] = w
    entries = sorted(merged.values(), key=lambda w: tuple(str(x) for x in w.identity()))
    text = json.dumps({"format": FORMAT, "entries": [w.to_json() for w in entries]}, indent=1)
    return write_text_atomic(path, text + "\n")


def apply_stored_winners(
    device: torch.device | str, cache_dir: str | os.PathLike[str] | None = None
) -> int:
    """Force the stored winners that fit this device; return how many were applied.

    An entry applies only when its device name, compute capability and Triton version all
    equal the present ones (:func:`present_device`), its kernel is registered and its config
    is still among that kernel's candidates for this device (``tuning.candidates``: the
    configs that fit its shared memory per block). Everything else is ignored. A missing
    file gives 0; a malformed one gives 0 and a warning (a training run must not die of a
    cache).
    """
    here = present_device(device)
    if here is None:
        return 0
    path = winners_path(cache_dir)
    try:
        entries = load_winners(path)
    except (ValueError, OSError) as e:
        warnings.warn(f"altgrad-tune winners ignored: {e}", stacklevel=2)
        return 0
    configs = kernel_tuning()
    from ..kernels import arch

    limits = arch.limits(device)  # the device's own figures; the table without them
    if limits is None or limits.capability != here.capability:
        limits = arch.by_capability(here.capability)
    registered = set(configs.kernels())
    applied, stale = 0, []
    for w in entries:
        if (w.device, tuple(w.capability), w.triton) != (here.name, here.capability, here.triton):
            continue
        if w.kernel not in registered:
            continue
        if w.meta not in configs.candidates(w.kernel, limits):
            stale.append(w.kernel)
            continue
        configs.set_override(w.kernel, w.key, w.meta)
        applied += 1
    if stale:
        warnings.warn(
            f"altgrad-tune: {len(stale)} stored winner(s) ({', '.join(sorted(set(stale)))}) "
            f"are no longer candidates on {limits.arch} (configs that may not fit the GPU); "
            f"ignored, rerun altgrad-tune",
            stacklevel=2,
        )
    return applied
