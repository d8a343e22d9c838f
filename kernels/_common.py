"""What every kernel family shares: storage dtypes, input checks, jit activations, the
launch rule and the launch options the installed Triton supports.

Each family file keeps its own kernels, configs and autograd function; the pieces below
were repeated in each of them before, with small drifts in wording and behaviour.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import torch
import triton
import triton.language as tl

from . import tuning
from ._dispatch import interpreting

STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Storage dtypes every family accepts; arithmetic and accumulation are fp32 whatever it is."""


# --------------------------------------------------------------------------- activations


@triton.jit
def sigmoid(x):
    """Logistic sigmoid in fp32 (no libdevice: the CPU interpreter lacks it)."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    """tanh(x) = 2 sigmoid(2x) - 1: libdevice's tanh is not available under the interpreter."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


# --------------------------------------------------------------------------- input checks


def check_tensor(
    fn: str,
    name: str,
    t: object,
    *,
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    fp32_ok: bool = False,
    contiguous: bool = False,
    optional: bool = False,
    ref: str = "",
) -> None:
    """Raise one ``ValueError`` naming ``fn``, ``name`` and what is allowed, if ``t`` is not a
    tensor of a storage dtype with the given shape, dtype and device.

    ``fp32_ok``: float32 is accepted besides ``dtype`` (a cell state carried in fp32 under
    fp16/bf16 storage). ``optional``: None is accepted. ``ref``: the input whose dtype and
    device these are, named in the message ("must match x's float32").
    """
    want = f"match {ref}'s" if ref else "be"
    if t is None:
        if optional:
            return
        raise ValueError(f"{fn}: {name} is required, got None")
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in STORAGE_DTYPES:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in STORAGE_DTYPES)
        raise ValueError(f"{fn}: {name} has dtype {t.dtype}; allowed: {allowed}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype and not (fp32_ok and t.dtype == torch.float32):
        also = " or be float32" if fp32_ok else ""
        raise ValueError(f"{fn}: {name} has dtype {t.dtype}, must {want} {dtype}{also}")
    if device is not None and t.device != device:
        raise ValueError(f"{fn}: {name} is on {t.device}, must {want} {device}")
    if contiguous and not t.is_contiguous():
        raise ValueError(
            f"{fn}: {name} must be contiguous (call .contiguous()), got strides {t.stride()}"
        )


def strides(t: torch.Tensor | None, ndim: int = 3) -> tuple[int, ...]:
    """``t``'s strides, or zeros for an absent optional input (never read by the kernel)."""
    return (0,) * ndim if t is None else tuple(t.stride())


# --------------------------------------------------------------------------- launching


def launch(
    kernel_name: str,
    plain: Callable,
    tuned: Callable,
    *,
    key: tuning.Key,
    heuristic: Callable[[], tuning.Meta],
    grid: Callable[[tuning.Meta], tuple[int, ...]],
    args: Sequence,
    meta: tuning.Meta | None = None,
    **constexprs,
) -> tuning.Meta | None:
    """Launch one kernel by the house rule and return the meta it ran with (None: autotune).

    ``meta`` given > a forced choice for ``(kernel_name, key)`` in :mod:`tuning` > the
    ``heuristic`` under the interpreter > ``@triton.autotune`` over the registered
    candidates (``tuned``). ``grid`` maps a meta dict to the launch grid.
    """
    if meta is None:
        meta = tuning.pick(kernel_name, key, heuristic)
    if meta is None:
        tuned[grid](*args, **constexprs)
    else:
        plain[grid(meta)](*args, **constexprs, **meta)
    return meta


@functools.cache
def _cuda_launch_options() -> frozenset[str]:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:  # a Triton without the NVIDIA backend
        return frozenset()
    return frozenset(f.name for f in dataclasses.fields(CUDAOptions))


def launch_option_supported(name: str) -> bool:
    """Whether ``kernel[grid](..., name=...)`` is understood by the installed Triton on a GPU.

    Newer options (``launch_pdl``, ``launch_cooperative_grid``) appeared in later Triton
    releases; the project runs on several (3.6 on the GPU machines, 3.9 in CI), so a
    launcher passes them only where this says so, and never under the interpreter.
    """
    return not interpreting() and name in _cuda_launch_options()
