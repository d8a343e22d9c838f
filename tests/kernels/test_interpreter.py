"""bf16 under the CPU interpreter as a GPU computes it (``kernels/_interpreter.py``).

Tiny kernels against torch on the same bf16 values: a bf16 ``tl.dot`` with an fp32
accumulator against torch's fp32 matmul, fp32 -> bf16 (a store to a bf16 tensor and an
explicit ``.to``) against torch's round-to-nearest-even bit for bit, and bf16 -> fp32 for
all 65536 patterns. Under the interpreter each check is repeated with Triton's own functions
put back (``unpatched``), where it must come out wrong: the patch is what makes it right.
On a GPU (``TRITON_INTERPRET`` off) the same kernels are compiled and must agree as well.
"""

import types

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from altgrad_triton.kernels import _interpreter, interpreting
from altgrad_triton.kernels._interpreter import (
    PATCHED,
    bf16_bits_to_fp32,
    fp32_to_bf16_bits,
    patch_interpreter,
    unpatched,
)

COVERED = ("3.6.0", "3.9.0")
"""The Triton releases CI runs, each with all three faults (kernels/_interpreter.py)."""
DOT = "InterpreterBuilder.create_dot"
ROUND = "InterpreterBuilder.cast_impl: fp32 -> bf16"
DECODE = "InterpreterBuilder.cast_impl: bf16 -> fp32"


def _patched(prefix: str) -> bool:
    return any(p.startswith(prefix) for p in _interpreter.PATCHED)


def _wrong_without_patch(prefix: str, check) -> None:
    """Under the interpreter with the fix ``prefix`` in place: ``check()`` (an assertion of
    the right result) fails once Triton's own functions are back."""
    if not interpreting():
        pytest.skip("a GPU runs the kernels: the interpreter is not patched")
    why = [w for name, w in _interpreter.SKIPPED.items() if name.startswith(prefix)]
    if triton.__version__ in COVERED:  # both have every fault: the fix must be in place
        assert _patched(prefix), f"{prefix} not patched on Triton {triton.__version__}: {why}"
    elif not _patched(prefix):
        pytest.skip(f"{prefix} not patched on Triton {triton.__version__}: {why}")
    with unpatched(), pytest.raises(AssertionError):
        check()


@triton.jit
def _dot_kernel(a_ptr, b_ptr, c_ptr, out_ptr, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr):
    rm, rn, rk = tl.arange(0, M), tl.arange(0, N), tl.arange(0, K)
    a = tl.load(a_ptr + rm[:, None] * K + rk[None, :])
    b = tl.load(b_ptr + rk[:, None] * N + rn[None, :])
    acc = tl.load(c_ptr + rm[:, None] * N + rn[None, :])  # fp32
    tl.store(out_ptr + rm[:, None] * N + rn[None, :], tl.dot(a, b, acc))


@triton.jit
def _to_bf16_kernel(x_ptr, stored_ptr, cast_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)  # fp32
    tl.store(stored_ptr + offs, x, mask=mask)  # the store converts
    tl.store(cast_ptr + offs, x.to(tl.bfloat16), mask=mask)


@triton.jit
def _to_fp32_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask).to(tl.float32), mask=mask)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t.view(torch.int32)


def _assert_same_values(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Equal bits wherever ``want`` is a number, and NaN where it is NaN (a GPU's NaN is
    0x7FFF where torch's is 0x7FC0)."""
    nan = torch.isnan(want.float())
    assert torch.equal(torch.isnan(got.float()), nan), f"{what}: NaN in other places"
    diff = (_bits(got) != _bits(want)) & ~nan
    assert not diff.any(), f"{what}: {int(diff.sum())} of {got.numel()} differ"


# --------------------------------------------------------------------------- dot


def test_bf16_dot_is_an_fp32_matmul_of_the_values(triton_device):
    m, n, k = 16, 32, 16  # the smallest tl.dot shape on a GPU
    a = torch.randn(m, k).bfloat16()
    b = torch.randn(k, n).bfloat16()
    c = torch.randn(m, n)
    want = c + a.float() @ b.float()  # bf16 products are exact in fp32; fp32 sums

    def check():
        out = torch.empty(m, n)
        _dot_kernel[(1,)](a, b, c, out, m, n, k)
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)

    check()
    if triton_device == "cpu":
        _wrong_without_patch(DOT, check)


# --------------------------------------------------------------------------- conversions


def _fp32_cases() -> torch.Tensor:
    """Random bit patterns (NaNs, infinities and subnormals among them) and the cases where
    truncation and rounding part: ties to even down and up, a carry into the exponent,
    overflow to infinity, subnormals, signed zeros."""
    special = [
        0x3F80_8000, 0x3F81_8000,  # ties: to 0x3F80 (even) and to 0x3F82 (even)
        0x3F80_8001, 0x3F80_7FFF,  # just above and below a tie
        0x3FFF_FFFF, 0x7F7F_FFFF,  # rounds up into the exponent (2.0); max fp32 -> inf
        0x0000_8000, 0x0001_8000, 0x0000_0001,  # subnormals: tie, tie, the smallest
        0x8000_0000, 0x0000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0001, 0xFF81_2345,
    ]  # fmt: skip
    special = torch.tensor(special, dtype=torch.int64).to(torch.int32)  # wrap to int32 bits
    rand = torch.randint(-(2**31), 2**31, (4000,), dtype=torch.int64).to(torch.int32)
    halves = (rand & ~0xFFFF) | 0x8000  # exact ties at every exponent
    return torch.cat([special, rand, halves]).view(torch.float32)


def test_fp32_to_bf16_rounds_to_nearest_even(triton_device):
    x = _fp32_cases().to(triton_device)
    want = x.to(torch.bfloat16)  # round to nearest even, as a GPU's cvt.rn.bf16.f32

    def check():
        stored, cast = torch.empty_like(want), torch.empty_like(want)
        _to_bf16_kernel[(triton.cdiv(x.numel(), 1024),)](x, stored, cast, x.numel(), BLOCK=1024)
        _assert_same_values(stored, want, "store of fp32 to bf16")
        _assert_same_values(cast, want, ".to(tl.bfloat16)")

    check()
    if triton_device == "cpu":
        _wrong_without_patch(ROUND, check)


def test_bf16_to_fp32_is_exact_for_every_pattern(triton_device):
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)

    def check():
        y = torch.empty(x.shape, dtype=torch.float32)
        _to_fp32_kernel[(triton.cdiv(x.numel(), 4096),)](x, y, x.numel(), BLOCK=4096)
        _assert_same_values(y, x.float(), "bf16 -> fp32")

    check()
    if triton_device == "cpu":
        _wrong_without_patch(DECODE, check)  # the subnormals


def test_numpy_helpers_match_torch():
    x = _fp32_cases()
    bits = torch.from_numpy(fp32_to_bf16_bits(x.numpy()).view(np.int16))
    _assert_same_values(bits.view(torch.bfloat16), x.to(torch.bfloat16), "fp32_to_bf16_bits")
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    decoded = torch.from_numpy(bf16_bits_to_fp32(every.numpy().view(np.uint16)))
    _assert_same_values(decoded, every.view(torch.bfloat16).float(), "bf16_bits_to_fp32")
    assert fp32_to_bf16_bits(np.float32(1.0)).shape == ()  # a 0-d array stays 0-d


# --------------------------------------------------------------------------- the patching


@pytest.mark.skipif(not PATCHED, reason="the interpreter is not running or needs no patch")
def test_patch_is_idempotent_and_unpatched_restores():
    from triton.runtime.interpreter import InterpreterBuilder

    ours = (InterpreterBuilder.create_dot, InterpreterBuilder.cast_impl)
    assert patch_interpreter() == PATCHED
    assert patch_interpreter(force=True) == PATCHED
    assert (InterpreterBuilder.create_dot, InterpreterBuilder.cast_impl) == ours
    with unpatched():
        assert InterpreterBuilder.create_dot is not ours[0]
    assert (InterpreterBuilder.create_dot, InterpreterBuilder.cast_impl) == ours


def test_off_the_interpreter_nothing_is_patched(monkeypatch):
    monkeypatch.setattr(_interpreter, "PATCHED", ())
    monkeypatch.setattr(_interpreter, "SKIPPED", {})
    monkeypatch.setattr(_interpreter, "interpreting", lambda: False)
    assert patch_interpreter() == ()
    assert "TRITON_INTERPRET is off" in _interpreter.SKIPPED["all"]


def test_a_triton_that_is_right_already_is_left_alone(monkeypatch):
    """Feature detection: an interpreter whose dot and casts are right (as a later Triton's
    may be) keeps its functions, and SKIPPED says why; one without InterpreterBuilder is
    left alone too."""
    from triton.runtime import interpreter

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        product = np.matmul(bf16_bits_to_fp32(a.data), bf16_bits_to_fp32(b.data))
        return interpreter.TensorHandle(product + d.data, d.dtype.scalar)

    def cast_impl(self, src, dst_type):
        if dst_type.scalar == tl.bfloat16:
            return interpreter.TensorHandle(fp32_to_bf16_bits(src.data), tl.bfloat16)
        return interpreter.TensorHandle(bf16_bits_to_fp32(src.data), tl.float32)

    fixed = type("InterpreterBuilder", (), {"create_dot": create_dot, "cast_impl": cast_impl})
    fake = types.SimpleNamespace(
        InterpreterBuilder=fixed,
        TensorHandle=interpreter.TensorHandle,
        _get_np_dtype=interpreter._get_np_dtype,
    )
    monkeypatch.setattr(triton.runtime, "interpreter", fake)
    monkeypatch.setattr(_interpreter, "PATCHED", ())
    monkeypatch.setattr(_interpreter, "SKIPPED", {})
    assert patch_interpreter(force=True) == ()
    assert (fixed.create_dot, fixed.cast_impl) == (create_dot, cast_impl)
    assert len(_interpreter.SKIPPED) == 3
    assert all("already" in why for why in _interpreter.SKIPPED.values())

    monkeypatch.setattr(triton.runtime, "interpreter", types.SimpleNamespace())
    assert patch_interpreter(force=True) == ()
    assert "no InterpreterBuilder" in _interpreter.SKIPPED["all"]
