"""Triton LSTM segment on a CUDA GPU vs the fp32 PyTorch reference at the paper's shapes.

B=20, T=200, H in {650, 1550} (AWD-LSTM on PTB/WT2), fp32 and bf16 storage. Errors are
norm-relative (||a - b|| / ||b||) so one bound serves every tensor: fp32 uses TF32
``tl.dot`` (``torch.backends.cudnn.allow_tf32``, PyTorch's default, as cuDNN does) and must
stay within 5e-3; bf16 storage (fp32 compute, c kept in fp32, h and W rounded to bf16 each
step) within 2e-2. Measured on an H200 (triton 3.6, torch 2.11): worst fp32 error 9.5e-4
(d_h0), worst bf16 4.0e-3 (d_w_hh); ``pytest -s`` prints them. About 40-50 s cold on an
H200 (compilation and autotuning of the paper shapes included); the odd small shape forces
one config through ``tuning`` so it does not autotune again.

Run with ``TRITON_INTERPRET=0`` exported: tests/conftest.py sets the interpreter otherwise.
"""

import pytest
import torch
from altgrad_triton.kernels import interpreting, tuning
from altgrad_triton.kernels.lstm import config_key, lstm_segment, lstm_segment_reference

pytestmark = [
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (Triton kernels compiled for it)"
    ),
    pytest.mark.skipif(
        interpreting(),
        reason="TRITON_INTERPRET=1 (tests/conftest.py sets it unless TRITON_INTERPRET=0 is "
        "exported): compiled kernels are what this module tests",
    ),
]

REL_TOL = {torch.float32: 5e-3, torch.bfloat16: 2e-2}


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def _inputs(batch, steps, hidden, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    bound = hidden**-0.5  # nn.LSTM's init scale
    gx = torch.randn(steps, batch, 4 * hidden, device="cuda", generator=gen)
    w_hh = (torch.rand(4 * hidden, hidden, device="cuda", generator=gen) * 2 - 1) * bound
    h0 = torch.randn(batch, hidden, device="cuda", generator=gen) * 0.5
    c0 = torch.randn(batch, hidden, device="cuda", generator=gen) * 0.5
    return gx, w_hh, h0, c0


def _check(batch, steps, hidden, dtype, c0_dtype=None):
    """``c0_dtype``: float32 to pass c0 as the cells do under bf16 (c carried in fp32)."""
    c0_dtype = c0_dtype or dtype
    base = _inputs(batch, steps, hidden)
    ref_in = [x.clone().requires_grad_() for x in base]
    ref = lstm_segment_reference(*ref_in)
    ups = [torch.randn_like(r) for r in ref]
    ref_grads = torch.autograd.grad(ref, ref_in, ups)

    ins = [x.to(d).requires_grad_() for x, d in zip(base, [dtype] * 3 + [c0_dtype], strict=True)]
    out = lstm_segment(*ins, backend="triton")
    grads = torch.autograd.grad(out, ins, [u.to(dtype) for u in ups])
    torch.cuda.synchronize()

    tol = REL_TOL[dtype]
    names = ("h_seq", "h_T", "c_T", "d_gx", "d_w_hh", "d_h0", "d_c0")
    errs = {
        n: _rel(a, b) for n, a, b in zip(names, (*out, *grads), (*ref, *ref_grads), strict=True)
    }
    summary = ", ".join(f"{k}={v:.1e}" for k, v in errs.items())
    print(f"B{batch}-T{steps}-H{hidden}-{dtype}: {summary}")
    for (n, e), x in zip(errs.items(), (*out, *grads), strict=True):
        assert x.dtype == (c0_dtype if n in ("c_T", "d_c0") else dtype), n
        assert torch.isfinite(x).all(), n
        assert e < tol, f"{n}: relative error {e:.2e} >= {tol}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("hidden", [650, 1550])
def test_paper_shapes(hidden, dtype):
    _check(20, 200, hidden, dtype)


def test_bf16_storage_with_fp32_cell_state():
    _check(20, 200, 650, torch.bfloat16, c0_dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_odd_small_shape(dtype):
    key = config_key(3, 33, dtype)
    meta = {"BLOCK_B": 16, "BLOCK_H": 16, "BLOCK_K": 64, "num_warps": 4, "num_stages": 2}
    try:
        tuning.set_override("lstm_fwd", key, meta)
        tuning.set_override("lstm_bwd", key, meta)
        _check(3, 7, 33, dtype)
    finally:
        tuning.set_override("lstm_fwd", key, None)
        tuning.set_override("lstm_bwd", key, None)
