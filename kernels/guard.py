"""The kernel guard: every Triton family checked on the device it runs on, and taken off
Triton for the rest of a run when it fails there, so that a kernel never ends a run.

Why: the kernels are compiled and checked on a CPU (the interpreter, and compiles for each
GPU architecture without one), but a user's GPU, driver and Triton build are where they
first really run. A config that does not fit (``OutOfResources``), a compile error in that
Triton, a failed launch or a wrong result there would otherwise end the run, or, worse,
train on wrong numbers. So while a guard is active (:func:`activate`; the trainer does it
for each run), a family's first launch for each shape class is run twice, on Triton and on
the PyTorch reference, from copies of the same inputs, and its outputs and every gradient
are compared (:func:`compare`, at :data:`TOLERANCE`). A failure or a mismatch prints one
warning line and routes the family to the reference for the rest of the run
(``strict=False``), or raises one error (``strict=True``: the user asked for Triton
explicitly). :meth:`KernelGuard.records` says which families ran on Triton, and which fell
back and why, so that a result never claims kernels it did not use.

With no guard active (the library used directly, the tests, the benchmarks) the public
functions behave exactly as the family modules define them.

The check costs, per (family function, shape class, dtype, device): one more Triton
forward and backward and one PyTorch reference forward and backward, on copies of the
inputs; a shape class rounds every dimension up to a power of two, so a run with random
segment lengths checks a handful of classes. It draws no number from the global RNG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from . import tuning
from ._dispatch import interpreting, use_triton

FAMILY_KERNELS = {
    "lstm": ("lstm_fwd", "lstm_bwd"),
    "fo_pool": ("fo_pool_fwd", "fo_pool_bwd"),
    "elementwise": ("elementwise_fwd", "elementwise_bwd"),
    "authors_scan": ("authors_scan_fwd", "authors_scan_bwd"),
    "sg_loss": ("sg_loss",),
    "linear_ce": ("linear_ce",),
}
"""Each family's ``tuning`` kernel names: the configs a warning names."""

TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}
"""Largest error allowed, relative to the largest magnitude of the reference tensor, by the
storage dtype of the Triton run; the reference runs in fp32 on inputs upcast from the
same values. Relative to the tensor's scale rather than elementwise: a reduction over
thousands of terms (W_hh's gradient at H=1550) is exact to its scale, not in every small
entry. fp32 allows TF32 products (``allow_tf32``); a broken kernel (a wrong index, a race,
a missed tile) is off by the scale itself."""

FAMILY_TOLERANCE: dict[str, dict[torch.dtype, float]] = {}
"""Per-family overrides of :data:`TOLERANCE` (none needed so far)."""


def tolerance(family: str, dtype: torch.dtype) -> float:
    """The allowed error of ``family`` at storage ``dtype`` (relative to scale)."""
    return FAMILY_TOLERANCE.get(family, {}).get(dtype, TOLERANCE.get(dtype, 1e-3))


class KernelCheckError(RuntimeError):
    """A Triton family failed on this device while Triton was asked for explicitly."""


# --------------------------------------------------------------------------- comparing


@dataclasses.dataclass
class Comparison:
    """The outcome of running one call on Triton and on the reference."""

    max_error: float  # the worst error relative to its tensor's scale
    worst: str  # which tensor it was in ("output 0", "grad w_hh", ...)
    tolerance: float
    triton_seconds: float = 0.0
    reference_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance


def flat_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flat_outputs(o)]
    return []


def _copy(value: Any, upcast: bool) -> Any:
    """A fresh leaf holding ``value``'s numbers (fp32 if ``upcast`` and floating), that
    requires grad where ``value`` does; anything else as it is."""
    if not isinstance(value, torch.Tensor):
        return value
    t = value.detach()
    if upcast and t.is_floating_point():
        t = t.float()
    t = t.clone()
    return t.requires_grad_(value.requires_grad and t.is_floating_point())


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| over max |want| (in fp32; positions NaN in both ignored)."""
    got, want = got.detach().float(), want.detach().float()
    if got.shape != want.shape:
        return float("inf")
    both_nan = got.isnan() & want.isnan()
    diff = (got - want).abs().masked_fill(both_nan, 0.0)
    if diff.numel() == 0:
        return 0.0
    scale = want.abs().masked_fill(both_nan, 0.0).max().item()
    err = diff.max().item()
    if err != err:  # NaN where the reference is finite
        return float("inf")
    return err / max(scale, 1e-12) if err else 0.0


def _timed(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float]:
    import time

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def _forward_backward(fn: Callable, args: Sequence, kwargs: dict, backend: str, seed: int):
    """Outputs of ``fn`` on ``backend`` and the gradients of a random projection of them
    (cotangents from a private generator) with respect to the inputs that require grad."""
    outs = flat_outputs(fn(*args, **{**kwargs, "backend": backend}))
    leaves = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    leaves = [a for a in leaves if a.requires_grad]
    diff = [o for o in outs if o.requires_grad]
    grads: list[torch.Tensor | None] = []
    if leaves and diff:
        gen = torch.Generator(device=diff[0].device).manual_seed(seed)
        cot = [torch.randn(o.shape, generator=gen, device=o.device) for o in diff]
        total = sum((o.float() * c).sum() for o, c in zip(diff, cot, strict=True))
        grads = list(torch.autograd.grad(total, leaves, allow_unused=True))
    return outs, grads


def compare(
    fn: Callable, args: Sequence, kwargs: dict, *, family: str, seed: int = 0
) -> Comparison:
    """Run ``fn(*args, **kwargs)`` on Triton and on the fp32 reference, from copies of the
    same inputs, and compare every output and every gradient (the inputs that require
    grad). Raises whatever the Triton path raises."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    floats = [t for t in tensors if t.is_floating_point()]
    dtype = floats[0].dtype if floats else torch.float32
    device = tensors[0].device if tensors else torch.device("cpu")
    names = [f"input {i}" for i in range(len(args))] + list(kwargs)
    grad_names = [n for n, a in zip(names, (*args, *kwargs.values()), strict=True)
                  if isinstance(a, torch.Tensor) and a.requires_grad]  # fmt: skip
    kw = {k: v for k, v in kwargs.items() if k != "backend"}
    with torch.enable_grad(), torch.autocast(device.type, enabled=False):
        (t_out, t_grad), t_s = _timed(
            device,
            lambda: _forward_backward(
                fn, [_copy(a, False) for a in args], {k: _copy(v, False) for k, v in kw.items()},
                "triton", seed,
            ),
        )  # fmt: skip
        (r_out, r_grad), r_s = _timed(
            device,
            lambda: _forward_backward(
                fn, [_copy(a, True) for a in args], {k: _copy(v, True) for k, v in kw.items()},
                "torch", seed,
            ),
        )  # fmt: skip
    pairs = [(f"output {i}", a, b) for i, (a, b) in enumerate(zip(t_out, r_out, strict=False))]
    if len(t_out) != len(r_out):
        pairs.append(("outputs", torch.zeros(1), torch.ones(1)))
    for name, a, b in zip(grad_names, t_grad, r_grad, strict=False):
        if a is None and b is None:
            continue
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        pairs.append((f"grad of {name}", a, b))
    errors = [(relative_error(a, b), name) for name, a, b in pairs] or [(0.0, "nothing")]
    err, worst = max(errors, key=lambda e: e[0])
    return Comparison(err, worst, tolerance(family, dtype), t_s, r_s)


# --------------------------------------------------------------------------- the guard


@dataclasses.dataclass
class FamilyRecord:
    """What happened to one family in a run."""

    ran: str = "triton"  # "triton", or "torch" once it fell back
    checks: int = 0  # shape classes compared with the reference
    max_error: float = 0.0  # the worst relative error among the checks that passed
    reason: str = ""  # why it fell back

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ran": self.ran, "checks": self.checks}
        if self.checks:
            out["max_error"] = self.max_error
        if self.reason:
            out["reason"] = self.reason
        return out


def device_name(device: torch.device) -> str:
    """The device as a warning names it: the GPU and its architecture."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    return f"{device.type} (Triton interpreter)" if interpreting() else str(device)


def configs_of(family: str) -> str:
    """The configs the family's kernels were last forced or pinned to, for a warning."""
    forced = [f"{k}{meta}" for k, _, meta in tuning.overrides() if k in FAMILY_KERNELS[family]]
    if forced:
        return "; ".join(dict.fromkeys(forced))
    return "the interpreter's heuristic" if interpreting() else "autotune"


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    first = " ".join(lines[0].split()) if lines else ""
    first = first[:157] + "..." if len(first) > 160 else first
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _shape_class(args: Sequence, kwargs: dict) -> tuple:
    """The check's key for one call: dtypes, devices and shapes with every dimension rounded
    up to a power of two, and the plain flags (ints, strings, bools) that select kernels."""
    key = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            key.append((str(a.dtype), str(a.device), tuple(tuning.size_bucket(d) for d in a.shape),
                        a.requires_grad))  # fmt: skip
        elif a is None or isinstance(a, (bool, int, str)):
            key.append(a)
    return tuple(key)


class KernelGuard:
    """Checks each family on first use per shape class and routes failures to PyTorch.

    ``check``: compare with the reference (False: only launch errors are caught).
    ``strict``: raise ``error`` (one line) instead of falling back. ``warn``: where the
    one-line warnings go.
    """

    def __init__(
        self,
        *,
        check: bool = True,
        strict: bool = False,
        warn: Callable[[str], None] | None = None,
        error: Callable[[str], BaseException] = KernelCheckError,
    ):
        self.check, self.strict, self.error = check, strict, error
        self.warn = warn or (lambda line: warnings.warn(line, RuntimeWarning, stacklevel=4))
        self._records: dict[str, FamilyRecord] = {}
        self._checked: set[tuple] = set()

    def records(self) -> dict[str, dict[str, Any]]:
        """Family -> what ran (``ran``: triton | torch), checks, max error, why it fell back;
        only families that were asked to run on Triton."""
        return {f: r.as_json() for f, r in sorted(self._records.items())}

    def fell_back(self, family: str) -> bool:
        r = self._records.get(family)
        return r is not None and r.ran == "torch"

    def call(self, family: str, fn: Callable, args: tuple, kwargs: dict) -> Any:
        """``fn(*args, **kwargs)``, which chose Triton: checked first if this shape class
        is new, and on the reference instead once the family has failed."""
        record = self._records.setdefault(family, FamilyRecord())
        torch_kwargs = {**kwargs, "backend": "torch"}
        if record.ran == "torch":
            return fn(*args, **torch_kwargs)
        key = (fn.__name__, _shape_class(args, kwargs))
        result = None
        try:
            if self.check and key not in self._checked:
                result = compare(fn, args, kwargs, family=family)
                self._checked.add(key)
                record.checks += 1
            if result is None or result.passed:
                out = fn(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise  # not the kernel's fault: the reference would not fit either
        except Exception as e:  # compile errors, OutOfResources, launch failures
            why = _one_line(e)
        else:
            if result is None or result.passed:
                record.max_error = max(record.max_error, result.max_error if result else 0.0)
                return out
            why = (f"max error {result.max_error:.3g} in {result.worst} (allowed "
                   f"{result.tolerance:g})")  # fmt: skip
        self._fail(family, args, why)
        return fn(*args, **torch_kwargs)

    def _fail(self, family: str, args: Sequence, why: str) -> None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        device = tensors[0].device if tensors else torch.device("cpu")
        line = (f"kernel {family} failed on {device_name(device)} with config "
                f"{configs_of(family)}: {why}")  # fmt: skip
        if self.strict:
            raise self.error(line)
        record = self._records[family]
        record.ran, record.reason = "torch", why
        self.warn(f"warning: {line}; {family} runs on PyTorch for the rest of this run")


_ACTIVE: KernelGuard | None = None


def activate(guard: KernelGuard | None) -> KernelGuard | None:
    """Make ``guard`` the one the public functions consult (None: none); returns the one
    that was active."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, guard
    return previous


def active() -> KernelGuard | None:
    """The guard the public functions consult now, if any."""
    return _ACTIVE


@contextlib.contextmanager
def guarding(guard: KernelGuard | None) -> Iterator[KernelGuard | None]:
    """``guard`` active inside the block, the previous one after it."""
    previous = activate(guard)
    try:
        yield guard
    finally:
        activate(previous)


def guarded(family: str, fn: Callable) -> Callable:
    """``fn`` (a family's public function, taking ``backend=``) going through the active
    guard whenever it would run Triton."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        guard = _ACTIVE
        if guard is None or kwargs.get("backend", "auto") == "torch":
            return fn(*args, **kwargs)
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if not use_triton(kwargs.get("backend", "auto"), *tensors):
            return fn(*args, **kwargs)
        return guard.call(family, fn, args, kwargs)

    call.family = family  # type: ignore[attr-defined]
    return call
