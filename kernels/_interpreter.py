"""bf16 under Triton's CPU interpreter (``TRITON_INTERPRET=1``) as a GPU computes it.

Why: the interpreter keeps a bf16 tensor as its raw uint16 bit patterns, and three of its
builder operations treat those patterns wrongly:

* ``InterpreterBuilder.create_dot`` hands the uint16 arrays to ``np.matmul`` as integers,
  so a bf16 ``tl.dot`` multiplies bit patterns (1.0 * 1.0 gives 0x3F80 ** 2 = 264257536).
  The bf16 LSTM was off by a relative 10 in its outputs and 1e11 in dh0.
* ``InterpreterBuilder.cast_impl`` (behind ``create_fp_trunc``, which ``.to(tl.bfloat16)``
  and a store of fp32 values to a bf16 pointer both reach) cuts fp32 to bf16 by truncation;
  a GPU's ``cvt.rn.bf16.f32`` rounds to nearest, ties to even.
* The same ``cast_impl`` decodes bf16 subnormals to wrong fp32 values (the 254 patterns
  with a zero exponent and a non-zero mantissa).

With this patch a bf16 dot decodes its operands to fp32 (exact: bf16 is the top half of
an fp32) and multiplies and accumulates in fp32, as a GPU's bf16 MMA does; fp32 -> bf16
rounds to nearest even (NaN stays a quiet NaN) and bf16 -> fp32 is the exact bit shift.
Every other dtype and operation goes to Triton's own code unchanged.

Covered: Triton 3.6.0 and 3.9.0 (both have the three faults above, in the same functions).
Each fault is detected by a probe on Triton's own function before anything is replaced: a
Triton that fixes one, renames a function or changes its signature leaves that part alone,
and :data:`SKIPPED` says why (no warning). :data:`PATCHED` names what was replaced.

Applied by ``_common`` (which every kernel family imports) whenever the interpreter runs;
:func:`patch_interpreter` is idempotent and :func:`unpatched` puts Triton's own functions
back for a while (a test shows the faults with it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._dispatch import interpreting

PATCHED: tuple[str, ...] = ()
"""What :func:`patch_interpreter` replaced, as ``"Class.method: what it now does"``."""

SKIPPED: dict[str, str] = {}
"""What it left alone, with why (Triton already right, a function gone, not interpreting)."""

_ORIGINALS: dict[str, Callable[..., Any]] = {}  # method name -> Triton's own function
_MARK = "_altgrad_bf16_fixes"  # on our replacements: the fixes each carries

_DOT = "InterpreterBuilder.create_dot: bf16 operands decoded to fp32, fp32 product and sum"
_ROUND = "InterpreterBuilder.cast_impl: fp32 -> bf16 rounds to nearest even"
_DECODE = "InterpreterBuilder.cast_impl: bf16 -> fp32 exact (subnormals too)"


# --------------------------------------------------------------------------- bit conversions


def bf16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    """fp32 values of bf16 bit patterns (uint16): the pattern is an fp32's top half."""
    wide = np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    return np.asarray(wide).view(np.float32)


def fp32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) of fp32 ``values``, rounded to nearest, ties to even, as
    a GPU's ``cvt.rn.bf16.f32`` and torch's ``.to(torch.bfloat16)`` do: subnormals kept,
    overflow to infinity, a NaN stays a NaN (quiet bit set)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    finite = np.where(nan, np.uint32(0), bits)  # no NaN left: the sum below cannot wrap
    bias = np.uint32(0x7FFF) + ((finite >> np.uint32(16)) & np.uint32(1))
    rounded = (finite + bias) >> np.uint32(16)
    quiet = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(nan, quiet, rounded).astype(np.uint16).reshape(np.shape(values))


# --------------------------------------------------------------------------- replacements


def _mark(
    replacement: Callable[..., Any], original: Callable[..., Any], fixes: tuple[str, ...]
) -> Callable[..., Any]:
    """Tag a replacement with Triton's function and what it fixes: a second
    :func:`patch_interpreter` (a reloaded module too) finds both there."""
    replacement.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(replacement, _MARK, fixes)
    return replacement


def _patched_dot(original: Callable[..., Any], handle: type) -> Callable[..., Any]:
    import triton.language as tl

    def create_dot(self, a, b, d, *args, **kwargs):
        if not (
            a.dtype.scalar == tl.bfloat16
            and b.dtype.scalar == tl.bfloat16
            and d.dtype.scalar == tl.float32
        ):
            return original(self, a, b, d, *args, **kwargs)
        product = np.matmul(bf16_bits_to_fp32(a.data), bf16_bits_to_fp32(b.data))
        return handle(product + d.data, d.dtype.scalar)

    return _mark(create_dot, original, (_DOT,))


def _patched_cast(
    original: Callable[..., Any], handle: type, fixes: tuple[str, ...]
) -> Callable[..., Any]:
    import triton.language as tl

    rounding, decoding = _ROUND in fixes, _DECODE in fixes

    def cast_impl(self, src, dst_type):
        src_ty, dst_ty = src.dtype.scalar, dst_type.scalar
        if rounding and src_ty == tl.float32 and dst_ty == tl.bfloat16:
            return handle(fp32_to_bf16_bits(src.data), dst_ty)
        if decoding and src_ty == tl.bfloat16 and dst_ty == tl.float32:
            return handle(bf16_bits_to_fp32(src.data), dst_ty)
        return original(self, src, dst_type)

    return _mark(cast_impl, original, fixes)


# --------------------------------------------------------------------------- probes
# Each runs Triton's own function on one value whose right and known-wrong answers differ;
# it returns {fix: why not} for the fixes it would not apply (none: apply them all).


def _probe_dot(builder: Any, handle: type, tl: Any) -> dict[str, str]:
    one = handle(np.full((1, 1), 0x3F80, dtype=np.uint16), tl.bfloat16)  # bf16 1.0
    zero = handle(np.zeros((1, 1), dtype=np.float32), tl.float32)
    got = float(np.asarray(type(builder).create_dot(builder, one, one, zero, None, 0).data).item())
    if got == float(0x3F80 * 0x3F80):  # the bit patterns multiplied as integers
        return {}
    if got == 1.0:
        return {_DOT: "this Triton's bf16 dot is right already"}
    return {_DOT: f"this Triton's bf16 dot gives {got} for 1.0 * 1.0, not the known fault"}


def _probe_cast(builder: Any, handle: type, tl: Any) -> dict[str, str]:
    cast, why = type(builder).cast_impl, {}
    # 1 + 2**-7 + 2**-8 (fp32 0x3F80C000): truncated 0x3F80, rounded to nearest 0x3F81
    x = handle(np.array([0x3F80C000], dtype=np.uint32).view(np.float32), tl.float32)
    got = int(np.asarray(cast(builder, x, tl.bfloat16).data).view(np.uint16)[0])
    if got == 0x3F81:
        why[_ROUND] = "this Triton rounds fp32 -> bf16 to nearest already"
    elif got != 0x3F80:
        why[_ROUND] = f"this Triton gives {got:#06x} for fp32 0x3F80C000, not the known fault"
    tiny = np.array([0x0001], dtype=np.uint16)  # the smallest bf16 subnormal, 2**-133
    got_value = np.asarray(cast(builder, handle(tiny, tl.bfloat16), tl.float32).data)
    if got_value.astype(np.float32).tobytes() == bf16_bits_to_fp32(tiny).tobytes():
        why[_DECODE] = "this Triton decodes bf16 subnormals right already"
    return why


# --------------------------------------------------------------------------- entry points


def _replace(
    builder_cls: type,
    name: str,
    fixes: tuple[str, ...],
    make: Callable[[Callable[..., Any], tuple[str, ...]], Callable[..., Any]],
    probe: Callable[[], dict[str, str]],
) -> list[str]:
    """Replace ``builder_cls.name`` by ``make(original, fixes_to_apply)`` where the probe
    finds the known faults; returns the fixes in place, records the others in SKIPPED."""
    current = getattr(builder_cls, name, None)
    if current is None:
        SKIPPED.update(dict.fromkeys(fixes, f"no InterpreterBuilder.{name} in this Triton"))
        return []
    if getattr(current, _MARK, None) is not None:  # ours already (a reloaded module)
        _ORIGINALS[name] = current.__wrapped__
        return list(getattr(current, _MARK))
    try:
        why = probe()
    except Exception as err:  # a changed signature or data layout: leave it alone
        why = dict.fromkeys(fixes, f"probing InterpreterBuilder.{name} failed: {err!r}")
    todo = tuple(f for f in fixes if f not in why)
    SKIPPED.update(why)
    if todo:
        _ORIGINALS[name] = current
        setattr(builder_cls, name, make(current, todo))
    return list(todo)


def patch_interpreter(*, force: bool = False) -> tuple[str, ...]:
    """Replace the interpreter functions that mishandle bf16 (see the module docstring)
    and return :data:`PATCHED`. Nothing happens unless the interpreter runs
    (``TRITON_INTERPRET`` set) or ``force``; a second call changes nothing."""
    global PATCHED
    if PATCHED:
        return PATCHED
    SKIPPED.clear()
    if not (interpreting() or force):
        SKIPPED["all"] = "TRITON_INTERPRET is off: compiled kernels need no patch"
        return PATCHED
    try:
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError as err:
        SKIPPED["all"] = f"triton.runtime.interpreter cannot be imported: {err}"
        return PATCHED
    builder_cls = getattr(interpreter, "InterpreterBuilder", None)
    handle = getattr(interpreter, "TensorHandle", None)
    np_dtype = getattr(interpreter, "_get_np_dtype", None)
    if builder_cls is None or handle is None or np_dtype is None:
        SKIPPED["all"] = "this Triton has no InterpreterBuilder, TensorHandle or _get_np_dtype"
        return PATCHED
    try:
        raw_bits = np_dtype(tl.bfloat16) == np.dtype(np.uint16)
        builder = builder_cls()  # for the probes
    except Exception as err:
        SKIPPED["all"] = f"this Triton's interpreter is not the one known here: {err!r}"
        return PATCHED
    if not raw_bits:
        SKIPPED["all"] = "this Triton's interpreter does not keep bf16 as uint16 bit patterns"
        return PATCHED
    done = _replace(
        builder_cls,
        "create_dot",
        (_DOT,),
        lambda original, _: _patched_dot(original, handle),
        lambda: _probe_dot(builder, handle, tl),
    )
    done += _replace(
        builder_cls,
        "cast_impl",
        (_ROUND, _DECODE),
        lambda original, todo: _patched_cast(original, handle, todo),
        lambda: _probe_cast(builder, handle, tl),
    )
    PATCHED = tuple(done)
    return PATCHED


@contextlib.contextmanager
def unpatched() -> Iterator[None]:
    """Triton's own interpreter functions for the duration (to show what the patch fixes);
    the patch is back afterwards."""
    if not _ORIGINALS:
        yield
        return
    from triton.runtime.interpreter import InterpreterBuilder

    ours = {name: getattr(InterpreterBuilder, name) for name in _ORIGINALS}
    try:
        for name, original in _ORIGINALS.items():
            setattr(InterpreterBuilder, name, original)
        yield
    finally:
        for name, replacement in ours.items():
            setattr(InterpreterBuilder, name, replacement)
