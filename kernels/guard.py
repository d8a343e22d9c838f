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
import time
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
"""Kernel families this package knows how to launch, and the ``tuning`` kernel names each
registers (the configs a warning names; ``altgrad-tune``'s jobs and ``--shapes``)."""

TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}
"""Largest error allowed, relative to the largest magnitude of the reference tensor, by the
storage dtype of the Triton run; the reference runs in fp32 on inputs upcast from the
same values. Relative to the tensor's scale rather than elementwise: a reduction over
thousands of terms (W_hh's gradient at H=1550) is exact to its scale, not in every small
entry. fp32 allows TF32 products (``allow_tf32``); a broken kernel (a wrong index, a race,
a missed tile) is off by the scale itself."""

SCALAR_TOLERANCE = {torch.float32: 1e-3, torch.float16: 5e-3, torch.bfloat16: 1e-2}
"""The same for 0-d outputs (a loss, a statistic): sums of many terms accumulated in fp32,
so their error is an average, not one element's; 5e-2 would let a bf16 LM loss of 10.4
nats be 0.5 nats off (a perplexity 1.6x too high)."""

FAMILY_TOLERANCE: dict[str, dict[torch.dtype, float]] = {}
"""Per-family overrides of :data:`TOLERANCE` (none needed so far)."""


def tolerance(family: str, dtype: torch.dtype, scalar: bool = False) -> float:
    """The allowed error of a tensor of ``family`` at storage ``dtype`` (relative to its
    scale); ``scalar``: a 0-d output."""
    if scalar:
        return SCALAR_TOLERANCE.get(dtype, 1e-3)
    return FAMILY_TOLERANCE.get(family, {}).get(dtype, TOLERANCE.get(dtype, 1e-3))


class KernelCheckError(RuntimeError):
    """A Triton family failed on this device while Triton was asked for explicitly."""


# --------------------------------------------------------------------------- comparing


@dataclasses.dataclass
class Comparison:
    """The outcome of running one call on Triton and on the reference: the tensor whose
    error is the largest share of its tolerance."""

    max_error: float  # its error relative to its scale
    worst: str  # which tensor it was ("output 0", "grad of input 1 (every output)", ...)
    tolerance: float
    triton_seconds: float = 0.0
    reference_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """The tensors of a family's result (a tensor, or nested tuples of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flat_outputs(o)]
    return []


def _copy(value: Any, upcast: bool, grad: bool) -> Any:
    """A fresh leaf holding ``value``'s numbers (fp32 if ``upcast`` and floating), that
    requires grad where ``value`` does (and ``grad``); anything else as it is."""
    if not isinstance(value, torch.Tensor):
        return value
    t = value.detach()
    if upcast and t.is_floating_point():
        t = t.float()
    t = t.clone()
    return t.requires_grad_(grad and value.requires_grad and t.is_floating_point())


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| over max |want| (in fp32; positions equal in both, infinities and
    NaNs included, ignored)."""
    got, want = got.detach().float(), want.detach().float()
    if got.shape != want.shape:
        return float("inf")
    same = (got == want) | (got.isnan() & want.isnan())
    if bool(same.all()):
        return 0.0
    diff = (got - want).abs().masked_fill(same, 0.0)
    err = diff.max().item()
    if err != err or err == float("inf"):  # NaN or inf where the other is finite
        return float("inf")
    scale = want.abs().masked_fill(~torch.isfinite(want), 0.0).max().item()
    return err / max(scale, 1e-12)


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float]:
    """``run()`` and its wall seconds, the device synchronized before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def _run(fn: Callable, args: Sequence, kwargs: dict, backend: str, *, upcast: bool,
         grad: bool, seed: int) -> dict[str, torch.Tensor | None]:  # fmt: skip
    """``fn`` on ``backend`` from copies of the inputs: every output, and with ``grad`` the
    gradient of each input that requires grad, twice: with random cotangents on every
    differentiable output, and on the first alone (a run's carried states get no gradient
    in real mode, which the backward kernels take as a case of their own). Cotangents come
    from a private generator; each pattern has its own forward."""
    named: dict[str, torch.Tensor | None] = {}
    patterns = ("every output", "output 0 only") if grad else ("no grad",)
    for pattern in patterns:
        a = [_copy(x, upcast, grad) for x in args]
        kw = {k: _copy(v, upcast, grad) for k, v in kwargs.items()}
        with torch.set_grad_enabled(grad):
            outs = flat_outputs(fn(*a, **kw, backend=backend))
        if pattern != "output 0 only":
            named |= {f"output {i}": o for i, o in enumerate(outs)}
        names = [f"input {i}" for i in range(len(a))] + list(kw)
        leaves = [(n, t) for n, t in zip(names, (*a, *kw.values()), strict=True)
                  if isinstance(t, torch.Tensor) and t.requires_grad]  # fmt: skip
        diff = [o for o in outs if o.requires_grad]
        if pattern == "output 0 only":
            if len(diff) < 2 or not outs or not outs[0].requires_grad:
                break  # the same as every output
            diff = diff[:1]
        if not (leaves and diff):
            break
        gen = torch.Generator(device=diff[0].device).manual_seed(seed)
        with torch.enable_grad():
            cot = [torch.randn(o.shape, generator=gen, device=o.device) for o in diff]
            total = sum((o.float() * c).sum() for o, c in zip(diff, cot, strict=True))
            grads = torch.autograd.grad(total, [t for _, t in leaves], allow_unused=True)
        named |= {f"grad of {n} ({pattern})": g for (n, _), g in zip(leaves, grads, strict=True)}
    return named


def _tensors(args: Sequence, kwargs: dict) -> list[torch.Tensor]:
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


def compare(
    fn: Callable, args: Sequence, kwargs: dict, *, family: str, seed: int = 0,
    reference: bool = True,
) -> Comparison:  # fmt: skip
    """Run ``fn(*args, **kwargs)`` on Triton and on the fp32 reference, from copies of the
    same inputs, as the call would run (its grad mode: under ``torch.no_grad`` the forward
    alone, the kernels evaluation runs), and compare every output and every gradient.
    ``reference=False``: the Triton forward and backward launches alone, nothing compared.
    Raises whatever the Triton path raises."""
    tensors = _tensors(args, kwargs)
    floats = [t for t in tensors if t.is_floating_point()]
    dtype = floats[0].dtype if floats else torch.float32
    device = tensors[0].device if tensors else torch.device("cpu")
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    kw = {k: v for k, v in kwargs.items() if k != "backend"}
    with torch.autocast(device.type, enabled=False):
        got, t_s = timed(device, lambda: _run(fn, args, kw, "triton", upcast=False,
                                               grad=grad, seed=seed))  # fmt: skip
        if not reference:
            return Comparison(0.0, "nothing compared", tolerance(family, dtype), t_s)
        want, r_s = timed(device, lambda: _run(fn, args, kw, "torch", upcast=True,
                                                grad=grad, seed=seed))  # fmt: skip
    worst = Comparison(0.0, "nothing", tolerance(family, dtype), t_s, r_s)
    for name in dict.fromkeys([*want, *got]):
        a, b = got.get(name), want.get(name)
        if a is None and b is None:
            continue
        if a is None or b is None:  # a gradient on one path only
            a = torch.zeros_like(b) if a is None else a
            b = torch.zeros_like(a) if b is None else b
        tol = tolerance(family, dtype, scalar=b.dim() == 0)
        err = relative_error(a, b)
        if err / tol > worst.max_error / worst.tolerance:
            worst = Comparison(err, name, tol, t_s, r_s)
    return worst


# --------------------------------------------------------------------------- the guard


@dataclasses.dataclass
class FamilyRecord:
    """What happened to one family in a run (kept in checkpoints, so a resumed run goes on
    as the run it continues: a family that fell back stays on PyTorch)."""

    ran: str = "triton"  # "triton", or "torch" once it fell back
    checks: int = 0  # shape classes compared with the reference
    max_error: float = 0.0  # the worst relative error among the checks that passed
    reason: str = ""  # why it fell back
    unchecked: int = 0  # shape classes whose check did not fit in the GPU's memory

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ran": self.ran, "checks": self.checks}
        if self.checks:
            out["max_error"] = self.max_error
        if self.reason:
            out["reason"] = self.reason
        if self.unchecked:
            out["unchecked"] = self.unchecked
        return out


def device_name(device: torch.device) -> str:
    """The device as a warning names it: the GPU and its architecture."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    return f"{device.type} (Triton interpreter)" if interpreting() else str(device)


def configs_since(family: str, before: list) -> str:
    """The configs this call's launches were pinned to (the ones ``tuning`` gained since
    ``before``), or how it chose one: what a warning names."""
    new = [f"{k}{meta}" for k, key, meta in tuning.overrides()
           if k in FAMILY_KERNELS[family] and (k, key, meta) not in before]  # fmt: skip
    if new:
        return "; ".join(dict.fromkeys(new))
    if interpreting():
        return "the interpreter's heuristic"
    return "a stored, pinned or autotuned one (none finished)"


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line: a compile error's own message (Triton's first line is
    the source position), else the first line, cut to 160 characters."""
    text = getattr(error, "error_message", None) or str(error)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = " ".join(lines[0].split()) if lines else ""
    first = first[:157] + "..." if len(first) > 160 else first
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _shape_class(args: Sequence, kwargs: dict) -> tuple:
    """The check's key for one call: grad mode, dtypes, devices and shapes with the first
    dimension rounded up to a power of two (the one that varies with AWD-LSTM's random
    segment lengths; the others select tiles and tuning keys), and the plain flags (ints,
    strings, bools) that select kernels."""
    key: list = [torch.is_grad_enabled()]
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            shape = tuple(a.shape)
            shape = (tuning.size_bucket(shape[0]), *shape[1:]) if shape else shape
            key.append((str(a.dtype), str(a.device), shape, a.requires_grad))
        elif a is None or isinstance(a, (bool, int, str)):
            key.append(a)
    return tuple(key)


class KernelGuard:
    """Checks each family on first use per shape class and routes failures to PyTorch.

    ``check``: compare with the reference (False: only launch the Triton forward and
    backward once per class, which still catches launch errors). ``strict``: raise
    ``error`` (one line) instead of falling back. ``warn``: where the one-line warnings go.
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

    def restore(self, records: dict[str, dict[str, Any]]) -> None:
        """Take back what :meth:`records` returned (from a checkpoint)."""
        self._records = {f: FamilyRecord(**r) for f, r in records.items()}

    def call(self, family: str, fn: Callable, args: tuple, kwargs: dict) -> Any:
        """``fn(*args, **kwargs)``, which chose Triton: checked first if this shape class
        is new, and on the reference instead once the family has failed."""
        record = self._records.setdefault(family, FamilyRecord())
        torch_kwargs = {**kwargs, "backend": "torch"}
        if record.ran == "torch":
            return fn(*args, **torch_kwargs)
        key = (fn.__name__, _shape_class(args, kwargs))
        before = tuning.overrides()
        try:
            result = self._check(family, fn, args, kwargs, record) if key not in self._checked \
                else None  # fmt: skip
            self._checked.add(key)
            if result is None or result.passed:
                return fn(*args, **kwargs)
            why = (f"max error {result.max_error:.3g} in {result.worst} (allowed "
                   f"{result.tolerance:g})")  # fmt: skip
        except (ValueError, TypeError) as e:  # the inputs: the caller's, or the kernel's?
            fn(*args, **torch_kwargs)  # raises here if the reference refuses them too
            why = one_line(e)
        except torch.cuda.OutOfMemoryError:
            raise  # the real call itself: not the kernel's fault
        except Exception as e:  # compile errors, OutOfResources, launch failures
            why = one_line(e)
        return self._fall_back(family, fn, args, kwargs, why, before)

    def _check(self, family: str, fn: Callable, args: tuple, kwargs: dict,
               record: FamilyRecord) -> Comparison | None:  # fmt: skip
        """Compare (or with ``check`` off, only launch) one call's copy; None when the copy
        did not fit in the GPU's memory (the check is skipped, the run goes on)."""
        try:
            result = compare(fn, args, kwargs, family=family, reference=self.check)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            record.unchecked += 1
            return None
        if self.check:
            record.checks += 1
            if result.passed:
                record.max_error = max(record.max_error, result.max_error)
        return result

    def _fall_back(self, family: str, fn: Callable, args: tuple, kwargs: dict, why: str,
                   before: list) -> Any:  # fmt: skip
        """Warn (or raise, when strict), record, and run the call on the reference."""
        tensors = _tensors(args, kwargs)
        device = tensors[0].device if tensors else torch.device("cpu")
        line = (f"kernel {family} failed on {device_name(device)} with config "
                f"{configs_since(family, before)}: {why}")  # fmt: skip
        if self.strict:
            raise self.error(line)
        record = self._records[family]
        record.ran, record.reason = "torch", why
        self.warn(f"warning: {line}; {family} runs on PyTorch for the rest of this run")
        return fn(*args, **{**kwargs, "backend": "torch"})


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
        if not use_triton(kwargs.get("backend", "auto"), *_tensors(args, kwargs)):
            return fn(*args, **kwargs)
        return guard.call(family, fn, args, kwargs)

    call.family = family  # type: ignore[attr-defined]
    return call
