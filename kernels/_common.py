"""What every kernel family shares: storage dtypes, input checks, jit activations, the
launch rule, the launch options the installed Triton supports, the ticket counters of
last-arriver reductions and programmatic dependent launch (PDL) where it exists.

Each family keeps its own kernels, configs and autograd function; the pieces below were
repeated in each of them before, with small drifts in wording and behaviour. The scan
families' combine functions are in ``_scan``.
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
from ._interpreter import patch_interpreter

patch_interpreter()  # only under TRITON_INTERPRET=1: bf16 dot and rounding as on a GPU

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


# --------------------------------------------------------------------------- last arriver


@triton.jit
def last_to_arrive(counter, programs):
    """Take a ticket from ``counter``; True in the one program that takes the last of
    ``programs`` tickets, which then sees every other program's stores and must put the
    counter back to 0 (``tl.store(counter, 0)``) before it returns.

    Why it is safe without waiting (NVIDIA's threadFenceReduction pattern, done with an
    ordered atomic instead of ``__threadfence``):

    * ``tl.debug_barrier()`` (``bar.sync``): every thread of this program has issued its
      stores before the ticket is taken. Triton performs a scalar atomic from a single
      thread, and its release covers the other threads' stores only once they are ordered
      before it by this barrier.
    * ``sem="acq_rel"`` (device scope): release, so this program's stores are visible to
      whoever draws a later ticket; acquire, so the last program sees the stores of every
      program that drew an earlier one. Triton broadcasts the returned ticket to the
      program's threads through shared memory behind a barrier, which carries the acquire
      over to all of them.

    Readers of the other programs' results should load them with ``cache_modifier=".cg"``
    (from L2, never a stale L1 line). No program ever waits for another, so the pattern
    needs no co-residency and runs unchanged under the CPU interpreter, where programs run
    one after another and the last program launched is the last to arrive.
    """
    tl.debug_barrier()
    ticket = tl.atomic_add(counter, 1, sem="acq_rel")
    return ticket == programs - 1


_TICKETS: dict[tuple[torch.device, int], torch.Tensor] = {}


def ticket_counters(device: torch.device, n: int = 1) -> torch.Tensor:
    """``n`` int32 ticket counters on ``device``, zero, for :func:`last_to_arrive`.

    One cached buffer per (device, current stream), grown when a launch needs more: kernels
    on one stream run one after another, and each leaves every counter it used at zero, so
    the next launch finds them so without a memset. Launches on different streams get
    different buffers, so they never share a counter while both are running. The buffer
    should first be requested outside CUDA-graph capture (a warm-up call does it).
    """
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" are one buffer
        device = torch.device("cuda", torch.cuda.current_device())
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    buf = _TICKETS.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 64), dtype=torch.int32, device=device)
        _TICKETS[key] = buf
    return buf


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


def choose_meta(
    kernel_name: str,
    key: tuning.Key,
    heuristic: Callable[[], tuning.Meta],
    meta: tuning.Meta | None = None,
) -> tuning.Meta | None:
    """The config a launch runs with, by the house rule; None means "autotune".

    ``meta`` given > a forced choice for ``(kernel_name, key)`` in :mod:`tuning` (a stored
    winner, a pinned one, or a test's) > the ``heuristic`` under the interpreter > None.
    """
    return tuning.pick(kernel_name, key, heuristic) if meta is None else meta


class PinningLauncher:
    """One kernel at one tuning key: the first launch without a config goes through
    ``@triton.autotune`` (``tuned``) and its winner is pinned for the key (``tuning.pin``),
    so later launches, and a resumed run, use the plain jitted kernel with the same config:
    autotuning again could pick another tile or split and change the order of fp32 sums.

    ``grid`` maps a meta dict to the launch grid (called with the winner's after tuning).
    """

    def __init__(
        self,
        kernel_name: str,
        plain: Callable,
        tuned: Callable,
        *,
        key: tuning.Key,
        grid: Callable[[tuning.Meta], tuple[int, ...]],
        meta: tuning.Meta | None,
    ):
        self.kernel_name, self.plain, self.tuned = kernel_name, plain, tuned
        self.key, self.grid, self.meta = key, grid, meta

    def __call__(self, *args, **constexprs) -> tuning.Meta:
        """Launch once; returns the meta the launch ran with."""
        if self.meta is None:
            self.tuned[self.grid](*args, **constexprs)
            self.meta = tuning.pin(self.kernel_name, self.key, self.tuned.best_config)
        else:
            self.plain[self.grid(self.meta)](*args, **constexprs, **self.meta)
        return self.meta


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
    """Launch a one-shot kernel by the house rule (:func:`choose_meta`, then
    :class:`PinningLauncher`) and return the meta it was given (None: it autotuned)."""
    meta = choose_meta(kernel_name, key, heuristic, meta)
    PinningLauncher(kernel_name, plain, tuned, key=key, grid=grid, meta=meta)(*args, **constexprs)
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


# --------------------------------------------------------------------------- PDL

try:  # grid dependency control: Triton releases with programmatic dependent launch
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    HAS_GDC = True
except ImportError:  # older Triton: no-op stand-ins, never reached (see pdl_unavailable)
    HAS_GDC = False

    @triton.jit
    def gdc_wait():
        """Stand-in for ``tl.extra.cuda.gdc_wait`` (absent from this Triton)."""
        pass

    @triton.jit
    def gdc_launch_dependents():
        """Stand-in for ``tl.extra.cuda.gdc_launch_dependents`` (absent from this Triton)."""
        pass


def pdl_unavailable(device: torch.device) -> str | None:
    """Why a kernel cannot be launched with programmatic dependent launch on ``device``
    here, or None when it can.

    PDL (``launch_pdl=True`` at launch, ``gdc_wait`` / ``gdc_launch_dependents`` in the
    kernel) lets a kernel's programs start while the previous kernel in the stream finishes;
    it needs Hopper (sm_90) or newer, a Triton that has both the launch option and the
    ``tl.extra.cuda`` intrinsics, and compiled kernels (not the interpreter). A kernel that
    reads what its predecessor wrote calls ``gdc_wait`` first.
    """
    if interpreting():
        return "the Triton interpreter has no programmatic dependent launch"
    if device.type != "cuda":
        return f"programmatic dependent launch needs a CUDA device, got {device}"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 9:
        return f"programmatic dependent launch needs sm_90 or newer, got sm_{major}{minor}"
    if not launch_option_supported("launch_pdl") or not HAS_GDC:
        return f"Triton {triton.__version__} lacks launch_pdl or tl.extra.cuda.gdc_wait"
    return None
