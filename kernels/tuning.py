"""The tuning seam: candidate launch configs per kernel and forced choices.

Every tunable kernel family registers, under a kernel name, a function that takes an
architecture's limits (``arch.Limits``: shared memory per block, registers) and returns the
candidate meta-parameter dicts that fit them, e.g. ``{"BLOCK": 256, "num_warps": 2,
"num_stages": 1}`` (UPPERCASE keys are the kernel's ``tl.constexpr`` meta-parameters;
``num_warps`` and ``num_stages`` are launch options). Plain dicts rather than
``triton.Config`` so that a tuner can store winners as JSON and force them back without
importing Triton types.

:func:`candidates` asks for the present GPU's by default (``arch.limits``); a named
architecture ("sm_86") or a device may be given instead. Without a GPU and without a name
there is nothing to size for, and the candidates are sized for ``arch.ANY``, the least of
every supported architecture's limits, less every config measured to spill on any of them;
never one architecture's silently: a CPU process (the interpreter, a dry run) only ever
sees configs that fit every supported GPU's shared memory.

A launcher asks :func:`pick` which meta-parameters to use:

1. a forced choice set with :func:`set_override` for ``(kernel, key)`` wins;
2. else under the Triton interpreter, the launcher's single heuristic config (the
   interpreter cannot autotune over several configs);
3. else ``None``: the launcher calls its ``@triton.autotune`` kernel, built for the device
   it launches on over that device's candidates (:class:`DeviceAutotune`).

A key is ``(dtype name, size bucket)`` from :func:`make_key`, e.g. ``("bfloat16", 32768)``;
the size is the kernel's parallel extent rounded up to a power of two, so that one stored
winner serves nearby shapes. ``altgrad-tune`` is meant to sweep :func:`candidates`, time each
with ``set_override``, and persist the winners (then reload them with ``set_override``).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from . import arch as _arch
from ._dispatch import interpreting

Meta = dict[str, int]
Key = tuple
Generator = Callable[[_arch.Limits], list[Meta]]

_LAUNCH_OPTIONS = ("num_warps", "num_stages")
_CANDIDATES: dict[str, Generator] = {}
_OVERRIDES: dict[tuple[str, Key], Meta] = {}


def register(kernel: str, configs: Generator) -> None:
    """Declare ``kernel``'s candidate generator (each kernel module does it at import):
    ``configs(limits)`` returns the candidates that fit ``limits`` (an ``arch.Limits``)."""
    _CANDIDATES[kernel] = configs
    _generated.cache_clear()


def kernels() -> list[str]:
    """Names of every registered tunable kernel."""
    return sorted(_CANDIDATES)


@functools.cache
def _generated(kernel: str, limits: _arch.Limits) -> tuple[tuple, ...]:
    return tuple(tuple(m.items()) for m in _CANDIDATES[kernel](limits))


def candidates(kernel: str, arch: _arch.Where = None) -> list[Meta]:
    """Candidate meta-parameter dicts for ``kernel`` (fresh copies) that fit ``arch``: an
    architecture ("sm_86"), a device, ``arch.Limits``, or None for the current CUDA device;
    without one, those sized for ``arch.ANY`` (module docstring)."""
    return _sized(kernel, _arch.limits(arch))


def _sized(kernel: str, limits: _arch.Limits | None) -> list[Meta]:
    """``kernel``'s candidates for ``limits``; None: for ``arch.ANY``."""
    if kernel not in _CANDIDATES:
        raise ValueError(f"unknown kernel {kernel!r}; registered: {kernels()}")
    return [dict(m) for m in _generated(kernel, _arch.ANY if limits is None else limits)]


def target_name(arch: _arch.Where = None) -> str:
    """What :func:`candidates` sizes for ``arch``: "sm_86", or "every supported
    architecture" without a GPU."""
    return _name(_arch.limits(arch))


def _name(limits: _arch.Limits | None) -> str:
    return "every supported architecture" if limits is None else limits.arch


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


def restore_overrides(entries: list, arch: _arch.Where = None) -> None:
    """Force the choices :func:`overrides` returned (keys may come back as lists), except a
    registered kernel's config that is not among its candidates for ``arch`` (default: the
    present GPU), e.g. one saved on a GPU with more shared memory per block than this one,
    which would not fit here: that one is left to the tuner, with a one-line warning.

    Without a GPU (and no ``arch``) nothing here can run out of resources, so a config any
    supported architecture offers is kept (a run resumed on a CPU, then on its GPU again,
    still has it); only one that none offers any more is dropped."""
    limits = _arch.limits(arch)
    for kernel, key, meta in entries:
        if kernel in _CANDIDATES:
            targets = [limits] if limits is not None else list(_arch.SUPPORTED.values())
            if not any(is_candidate(kernel, meta, t) for t in targets):
                where = "any supported architecture" if limits is None else limits.arch
                warnings.warn(
                    f"saved {kernel} config {meta} is no longer a candidate on {where} "
                    f"(it may not fit this GPU); ignored",
                    stacklevel=2,
                )
                continue
        set_override(kernel, tuple(key), meta)


_MODE_KEYS = ("LAUNCH", "GRAPH_STEPS")  # how a config is launched, not what compiles


def without_launch_modes(meta: Meta) -> Meta:
    """``meta`` without its launch-mode keys (an autotuner's pick has none)."""
    return {k: v for k, v in meta.items() if k not in _MODE_KEYS}


def is_candidate(kernel: str, meta: Meta, arch: _arch.Where = None) -> bool:
    """Whether ``meta`` is one of ``kernel``'s candidates for ``arch`` (default: the present
    GPU; launch-mode keys aside: an autotuner's pick has none)."""
    return without_launch_modes(meta) in [without_launch_modes(m) for m in candidates(kernel, arch)]


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


class DeviceAutotune:
    """``@triton.autotune`` of ``fn`` over ``kernel``'s candidates for the device a launch
    runs on: ``self(device)`` is the autotuner for that device's limits, built on first use
    and kept (one per distinct ``arch.Limits``), so that Triton never tries a config that
    does not fit the device (an ``OutOfResources`` at the first launch otherwise).

    ``configs`` maps the candidate list to the autotuner's (default: as it is; the LSTM
    drops its launch modes, which the step kernel does not take); ``options`` go to
    ``triton.autotune`` (``key``, ``prune_configs_by``, ``restore_value``, ...).
    """

    def __init__(self, kernel: str, fn: Callable,
                 configs: Callable[[list[Meta]], list[Meta]] | None = None,
                 **options: Any):  # fmt: skip
        self.kernel, self.fn, self.configs, self.options = kernel, fn, configs, options
        self._built: dict[_arch.Limits | None, Any] = {}

    def metas(self, device: _arch.Where = None) -> list[Meta]:
        """The configs the autotuner for ``device`` tries (before its own pruning)."""
        return self._metas(_arch.limits(device))

    def _metas(self, limits: _arch.Limits | None) -> list[Meta]:
        metas = _sized(self.kernel, limits)
        return self.configs(metas) if self.configs is not None else metas

    def __call__(self, device: _arch.Where = None):
        limits = _arch.limits(device)
        tuner = self._built.get(limits)
        if tuner is None:
            import triton

            configs = to_triton(self._metas(limits))
            if not configs:
                raise RuntimeError(f"{self.kernel}: no candidate fits {_name(limits)}")
            tuner = triton.autotune(configs=configs, **self.options)(self.fn)
            self._built[limits] = tuner
        return tuner


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
