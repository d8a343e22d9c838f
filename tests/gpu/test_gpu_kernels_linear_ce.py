"""The fused LM head on a real GPU at the WT2 shape (N = bptt 200 x batch 20 = 4,000 rows,
V = 33,278, D = 400), fp32 and bf16, against the unfused head in fp32 on the same (upcast)
inputs: loss and the gradients of hidden, weight and bias; the autotuned path (the tuner
runs the in-place kernel many times and must restore its logits between trials); and the
peak memory of one forward + backward against the unfused head's.

Run on a CUDA machine: ``pytest tests/gpu``. Not run yet on a GPU.
"""

import pytest
import torch
import torch.nn.functional as F
from altgrad_triton.kernels import interpreting, linear_cross_entropy, tuning

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(interpreting(), reason="TRITON_INTERPRET=1: far too slow at this shape"),
]

N, V, D = 4000, 33278, 400
# bf16: the logits and their gradient are stored in bf16 per chunk, as eager autocast does
TOL = {torch.float32: (2e-5, 1e-4), torch.bfloat16: (2e-2, 3e-2)}


def make(dtype):
    h = torch.randn(N, D, device="cuda").to(dtype).requires_grad_()
    w = (torch.randn(V, D, device="cuda") * 0.05).to(dtype).requires_grad_()
    b = (torch.randn(V, device="cuda") * 0.1).to(dtype).requires_grad_()
    return h, w, b, torch.randint(0, V, (N,), device="cuda")


def compare(dtype):
    h, w, b, t = make(dtype)
    loss = linear_cross_entropy(h, w, b, t, backend="triton")
    grads = torch.autograd.grad(loss, (h, w, b))
    ref = [x.detach().float().requires_grad_() for x in (h, w, b)]
    loss_ref = F.cross_entropy(F.linear(*ref), t)
    grads_ref = torch.autograd.grad(loss_ref, ref)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(loss, loss_ref, atol=atol, rtol=rtol)
    for name, g, r in zip(("dh", "dW", "db"), grads, grads_ref, strict=True):
        assert g.dtype == dtype, name
        scale = r.abs().max()
        torch.testing.assert_close(g.float() / scale, r / scale, atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_wt2_shape_forced_config(dtype):
    metas = tuning.candidates("linear_ce")
    tuning.set_override("linear_ce", tuning.make_key(dtype, V), metas[len(metas) // 2])
    try:
        compare(dtype)
    finally:
        tuning.clear_overrides()


def test_autotuned_path_restores_the_logits():
    tuning.clear_overrides()
    compare(torch.bfloat16)


def test_peak_memory_is_a_fraction_of_the_unfused_heads():
    """The issue's target is at most 10%; this asserts the structural claim (under a
    quarter), and prints both figures."""
    h, w, b, t = make(torch.bfloat16)
    peaks = []
    for fused in (True, False):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        if fused:
            loss = linear_cross_entropy(h, w, b, t, backend="triton")
        else:
            loss = F.cross_entropy(F.linear(h, w, b).float(), t)
        torch.autograd.grad(loss, (h, w, b))
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - before)
    print(f"peak MiB fused {peaks[0] / 2**20:.0f}, unfused {peaks[1] / 2**20:.0f}")
    assert peaks[0] < peaks[1] / 4
