"""The tuning seam: candidate launch configs per kernel and forced choices.

Every tunable kernel family registers, under a kernel name, a function returning its
candidate meta-parameter dicts, e.g. ``{"BLOCK": 256, "num_warps": 2, "num_stages": 1}``
(UPPERCASE keys are the kernel's ``tl.constexpr`` meta-parameters; ``num_warps`` and
``num_stages`` are launch options). Plain dicts rather than ``triton.Config`` so that a
tuner can store winners as JSON and force them back without importing Triton types.

A launcher asks :func:`pick` which meta-parameters to use:

1. a forced choice set with :func:`set_override` for ``(kernel, key)`` wins;
2. else under the Triton interpreter, the launcher's single heuristic config (the
   interpreter cannot autotune over several configs);
3. else ``None``: the launcher calls its ``@triton.autotune`` kernel over all candidates.

A key is ``(dtype name, size bucket)`` from :func:`make_key`, e.g. ``("bfloat16", 32768)``;
the size is the kernel's parallel extent rounded up to a power of two, so that one stored
winner serves nearby shapes. ``altgrad-tune`` is meant to sweep :func:`candidates`, time each
with ``set_override``, and persist the winners (then reload them with ``set_override``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ._dispatch import interpreting

Meta = dict[str, int]
Key = tuple

_LAUNCH_OPTIONS = ("num_warps", "num_stages")
_CANDIDATES: dict[str, Callable[[], list[Meta]]] = {}
_OVERRIDES: dict[tuple[str, Key], Meta] = {}


def register(kernel: str, configs: Callable[[], list[Meta]]) -> None:
    """Declare ``kernel``'s candidate generator (each kernel module does it at import)."""
    _CANDIDATES[kernel] = configs


def kernels() -> list[str]:
    """Names of every registered tunable kernel."""
    return sorted(_CANDIDATES)


def candidates(kernel: str) -> list[Meta]:
    """Candidate meta-parameter dicts for ``kernel`` (fresh copies)."""
    if kernel not in _CANDIDATES:
        raise ValueError(f"unknown kernel {kernel!r}; registered: {kernels()}")
    return [dict(m) for m in _CANDIDATES[kernel]()]


def size_bucket(n: int) -> int:
    """``n`` rounded up to a power of two (at least 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def make_key(dtype: torch.dtype, n: int) -> Key:
    """The override key for a launch: ``(dtype name, size bucket of n)``."""
    return (str(dtype).removeprefix("torch."), size_bucket(n))


def set_override(kernel: str, key: Key, meta: Meta | None) -> None:
    """Force ``meta`` for launches of ``kernel`` whose key is ``key`` (``None`` removes it)."""
    if meta is None:
        _OVERRIDES.pop((kernel, tuple(key)), None)
        return
    bad = [k for k in meta if not (k.isupper() or k in _LAUNCH_OPTIONS)]
    if bad:
        raise ValueError(
            f"meta for {kernel!r} has keys {bad}: allowed are UPPERCASE constexpr names "
            f"and {_LAUNCH_OPTIONS}"
        )
    _OVERRIDES[(kernel, tuple(key))] = dict(meta)


def get_override(kernel: str, key: Key) -> Meta | None:
    """The forced meta for ``(kernel, key)``, or ``None``."""
    meta = _OVERRIDES.get((kernel, tuple(key)))
    return None if meta is None else dict(meta)


@contextlib.contextmanager
def overridden(key: Key, **metas: Meta) -> Iterator[None]:
    """Force ``metas`` (kernel name -> meta) for launches whose key is ``key`` inside the
    block, then put back what was there before (e.g. ``overridden(k, lstm_fwd=m, lstm_bwd=m)``)."""
    before = {kernel: get_override(kernel, key) for kernel in metas}
    try:
        for kernel, meta in metas.items():
            set_override(kernel, key, meta)
        yield
    finally:
        for kernel, meta in before.items():
            set_override(kernel, key, meta)


def pin(kernel: str, key: Key, config: Any) -> Meta:
    """Force ``config`` (a ``triton.Config``, e.g. an autotuner's ``best_config``) for
    ``(kernel, key)`` from now on, and return it as a meta dict.

    Launchers pin what ``@triton.autotune`` chose on its first launch: autotuning again in
    another process may pick another tile or split, which changes the order of fp32 sums,
    so a resumed run would no longer give the bits of the run it continues. The trainer
    saves the pinned choices with its checkpoints (:func:`overrides`) and restores them.
    """
    meta = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
    set_override(kernel, key, meta)
    return dict(meta)


def overrides() -> list[tuple[str, Key, Meta]]:
    """Every forced choice, as ``(kernel, key, meta)`` (for a checkpoint)."""
    return [(kernel, key, dict(meta)) for (kernel, key), meta in _OVERRIDES.items()]


def restore_overrides(entries: list) -> None:
    """Force the choices :func:`overrides` returned (keys may come back as lists), except a
    registered kernel's config that is no longer among its candidates (one that may not
    fit the GPU): that one is left to the tuner, with a one-line warning."""
    for kernel, key, meta in entries:
        if kernel in _CANDIDATES and not is_candidate(kernel, meta):
            warnings.warn(
                f"saved {kernel} config {meta} is no longer a candidate; ignored", stacklevel=2
            )
            continue
        set_override(kernel, tuple(key), meta)


_MODE_KEYS = ("LAUNCH", "GRAPH_STEPS")  # how a config is launched, not what compiles


def is_candidate(kernel: str, meta: Meta) -> bool:
    """Whether ``meta`` is one of ``kernel``'s candidates (launch-mode keys aside: an
    autotuner's pick has none)."""

    def core(m: Meta) -> dict:
        return {k: v for k, v in m.items() if k not in _MODE_KEYS}

    return core(meta) in [core(m) for m in candidates(kernel)]


def clear_overrides(kernel: str | None = None) -> None:
    """Drop every forced choice (of one kernel, or of all)."""
    for k in [k for k in _OVERRIDES if kernel is None or k[0] == kernel]:
        del _OVERRIDES[k]


def pick(kernel: str, key: Key, heuristic: Callable[[], Meta]) -> Meta | None:
    """Meta-parameters to launch ``kernel`` with, or ``None`` to let autotune choose."""
    meta = get_override(kernel, key)
    if meta is not None:
        return meta
    if interpreting():
        return heuristic()
    return None


def to_triton(metas: list[Meta]) -> list:
    """Candidate dicts as ``triton.Config`` objects for ``@triton.autotune``."""
    import triton

    return [
        triton.Config(
            {k: v for k, v in m.items() if k not in _LAUNCH_OPTIONS},
            **{k: m[k] for k in _LAUNCH_OPTIONS if k in m},
        )
        for m in metas
    ]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return cdiv(a, b) * b


def max_programs(device: torch.device, per_sm: int = 2, interpreter: int = 4) -> int:
    """How many programs a persistent (grid-stride) kernel launches at most.

    ``per_sm`` programs per streaming multiprocessor on a GPU (a cached host query, no
    device sync); a handful under the interpreter, where every program costs milliseconds.
    """
    if device.type != "cuda":
        return interpreter
    return per_sm * torch.cuda.get_device_properties(device).multi_processor_count
