"""The benchmark families (``bench/families.py``): traffic and flop counts, and the authors'
scan cases run forward and backward as the GPU bench runs them."""

import torch

from altgrad_triton import bench


def test_traffic_and_flop_counts():
    # kernels/fo_pooling.py: the bf16 forward at T=200, B=20, H=1550 moves about 50 MB
    fo = bench.fo_pool_bytes(200, 20, 1550, 2)
    assert fo["fwd"] == 6_200_000 * 8 + 31_000 * 8
    assert fo["bwd"] == 6_200_000 * 14 + 31_000 * 8
    assert fo["fwd+bwd"] == fo["fwd"] + fo["bwd"]
    assert bench.fo_pool_bytes(1, 1, 1, 4)["fwd"] == 16 + 8
    assert bench.sg_loss_bytes(10) == {"fwd": 120, "bwd": 80, "fwd+bwd": 200}
    assert bench.elementwise_bytes(2, 3)["fwd"] == 2 * 3 * 12 + 2 * 8
    fl = bench.lstm_flops(70, 80, 1150)
    assert fl["fwd"] == 2 * 70 * 80 * 4 * 1150 * 2300
    assert bench.lstm_flops(1, 1, 1, layers=3)["fwd+bwd"] == 3 * 3 * 16


def test_authors_scan_cases_run_forward_and_backward_as_the_gpu_bench_does():
    """Under a GPU-mode Env on the CPU (the kernels through the interpreter): the scan's
    and the whole synthesizer's cases on both backends, each through the one forward +
    backward the peak-memory note runs (outputs that are not scalars take ones upstream;
    a bare autograd.grad refused them)."""
    from types import SimpleNamespace

    env = bench.Env(torch.device("cpu"), True, "x", "9.0", "t", "tr", "d", copy_gbps=1.0)
    shapes = SimpleNamespace(state=[("tiny", 2, 20)], units=4, compile_all=False)
    groups = bench.authors_scan_groups(env, shapes)
    assert [g.shape for g in groups] == ["tiny N=40 U=4 scan", "tiny B=2 D=20 U=4 synthesizer"]
    for g in groups:
        assert [c.provider for c in g.cases] == ["triton", "torch"]
        grads = []
        for c in g.cases:
            torch.manual_seed(1)  # the same inputs and weights for both backends
            fwd, leaves = c.make()
            bench.forward_backward(fwd, leaves)
            torch.manual_seed(0)  # the same zoneout mask and noise on both backends
            outs = list(fwd())
            ups = [torch.ones_like(o) for o in outs]
            grads.append(torch.autograd.grad(outs, leaves, ups, allow_unused=True)[0])
        torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)
    traffic = bench.authors_scan_bytes(10, 3)
    assert traffic == {"fwd": 600, "bwd": 960, "fwd+bwd": 1560}
