"""SG regression loss in one launch: the Triton kernel (interpreter or GPU) against the
reference -- loss, gradient, target scale and telemetry, over 1 to 8 programs, with the
last-arriver's ticket counter back at zero after every call -- plus the tuning-seam
registry in ``kernels/tuning.py`` that every kernel family uses."""

import pytest
import torch
import torch.nn.functional as F
from altgrad_triton.kernels import sg_loss as mod
from altgrad_triton.kernels import tuning
from altgrad_triton.kernels._common import ticket_counters
from altgrad_triton.kernels.sg_loss import (
    sg_mse_loss,
    sg_mse_loss_reference,
    sg_mse_loss_with_stats,
    sg_mse_loss_with_stats_reference,
)

# (atol, rtol) per dtype: the loss is an fp32 sum in both; the gradient is stored in pred's
# dtype and scaled by the upstream scalar.
TOL = {torch.float32: (1e-6, 1e-5), torch.float16: (1e-3, 2e-3)}

# ragged sizes; by default 5000 runs 4 programs under the interpreter (slices of 1280
# elements), 20 on an H100 (slices of 256)
SHAPES = [(1,), (37,), (1000,), (5000,), (20, 250), (3, 7, 11)]


def grads_of(fn, pred, target, upstream, **kw):
    loss = fn(pred, target, **kw)
    (g,) = torch.autograd.grad(loss, pred, upstream)
    return loss, g


def check(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=what)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N" + "x".join(map(str, s)) + "-float32")
def test_loss_and_gradient(shape, nan_poison, triton_device):
    pred = torch.randn(shape, requires_grad=True)
    target = torch.randn(shape)
    upstream = torch.randn(())
    loss, g = grads_of(sg_mse_loss, pred, target, upstream, backend="triton")
    loss_ref, g_ref = grads_of(sg_mse_loss_reference, pred, target, upstream)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert g.dtype == pred.dtype and g.shape == pred.shape
    check(loss, loss_ref, torch.float32, "loss")
    check(g, g_ref, torch.float32, "dpred")


def test_non_contiguous_pred_and_float16_target(nan_poison, triton_device):
    """pred a transposed view, target in another dtype: both are read as fp32."""
    pred = torch.randn(40, 30).t().requires_grad_()
    target = torch.randn(30, 40).half()
    upstream = torch.randn(())
    loss, g = grads_of(sg_mse_loss, pred, target, upstream, backend="triton")
    loss_ref, g_ref = grads_of(sg_mse_loss_reference, pred, target, upstream)
    check(loss, loss_ref, torch.float32, "loss")
    check(g, g_ref, torch.float32, "dpred")


def test_float16_pred(nan_poison, triton_device):
    pred = torch.randn(1000).half().requires_grad_()
    target = torch.randn(1000).half()
    loss, g = grads_of(sg_mse_loss, pred, target, torch.tensor(1.0), backend="triton")
    loss_ref, g_ref = grads_of(sg_mse_loss_reference, pred, target, torch.tensor(1.0))
    assert g.dtype == torch.float16
    check(loss, loss_ref, torch.float16, "loss")
    check(g, g_ref, torch.float16, "dpred")


def test_target_gets_no_gradient_and_retained_graph(nan_poison, triton_device):
    pred = torch.randn(37, requires_grad=True)
    target = torch.randn(37, requires_grad=True)
    loss = sg_mse_loss(pred, target, backend="triton")
    loss.backward(retain_graph=True)
    assert target.grad is None
    first = pred.grad.clone()
    loss.backward()  # the saved gradient was not scaled in place
    torch.testing.assert_close(pred.grad, 2 * first)


def test_deterministic_and_no_grad_path(nan_poison, triton_device):
    pred, target = torch.randn(5000), torch.randn(5000)
    a = sg_mse_loss(pred, target, backend="triton")
    b = sg_mse_loss(pred, target, backend="triton")
    assert torch.equal(a, b)
    check(a, sg_mse_loss_reference(pred, target), torch.float32, "loss")


def test_forced_config_multi_tile(monkeypatch, nan_poison, triton_device):
    """A forced 256-element tile: each program walks its slice (1280 elements under the
    interpreter) in several tiles."""
    monkeypatch.setattr(mod, "_heuristic", lambda n: pytest.fail("heuristic used"))
    pred = torch.randn(5000, requires_grad=True)
    target = torch.randn(5000)
    key = tuning.make_key(torch.float32, 5000)
    assert key == ("float32", 8192)
    try:
        tuning.set_override("sg_loss", key, {"BLOCK": 256, "num_warps": 2})
        loss, g = grads_of(sg_mse_loss, pred, target, torch.tensor(1.0), backend="triton")
    finally:
        tuning.clear_overrides("sg_loss")
    loss_ref, g_ref = grads_of(sg_mse_loss_reference, pred, target, torch.tensor(1.0))
    check(loss, loss_ref, torch.float32, "loss")
    check(g, g_ref, torch.float32, "dpred")


def counter_is_zero(device):
    return ticket_counters(torch.device(device)).count_nonzero().item() == 0


@pytest.mark.parametrize("n", [1, 1023, 5000])
@pytest.mark.parametrize("programs", [1, 3, 8])
def test_one_launch_over_several_programs(n, programs, nan_poison, triton_device):
    """Loss and gradient whatever the number of programs (some get no element when there
    are more than elements); the counter is back at zero after each call, and a second call
    gives the same bits."""
    pred, target = torch.randn(n), torch.randn(n)
    runs = [
        mod.sg_loss_forward(pred, target, want_grad=True, programs_per_row=programs)
        for _ in range(2)
    ]
    assert counter_is_zero(triton_device)
    (loss, telemetry, grad), (loss2, _, grad2) = runs
    assert telemetry is None
    assert torch.equal(loss, loss2) and torch.equal(grad, grad2)
    check(loss, sg_mse_loss_reference(pred, target), torch.float32, "loss")
    check(grad, 2 * (pred - target) / n, torch.float32, "dpred")


# (rows, elements per row): one row; ragged rows; rows that span several programs
STATS_SHAPES = [(1, 1), (3, 341), (4, 1250), (20, 25)]


@pytest.mark.parametrize("rows, dim", STATS_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("programs", [1, 3, 8])
def test_fused_telemetry_equals_pytorch(rows, dim, programs, nan_poison, triton_device):
    """Loss against s * target, its gradient, and the telemetry as the trainer computed it
    in PyTorch: F.cosine_similarity per row, averaged, and the norm ratio over the batch."""
    scale = 37.0
    pred, target = torch.randn(rows, dim), torch.randn(rows, dim)
    pred[0] *= 1e-3  # rows of very different sizes: the mean of row cosines is not global
    loss, telemetry, grad = mod.sg_loss_forward(
        pred, target, target_scale=scale, stats=True, want_grad=True, programs_per_row=programs
    )
    assert counter_is_zero(triton_device)
    t = target * scale
    check(loss, (pred - t).pow(2).mean(), torch.float32, "loss")
    check(grad, 2 * (pred - t) / pred.numel(), torch.float32, "dpred")
    cos = F.cosine_similarity(pred, t, dim=1, eps=1e-30).mean()
    torch.testing.assert_close(telemetry[0], cos, atol=1e-6, rtol=1e-5, msg="sg_cos")
    ratio = pred.norm() / t.norm().clamp_min(1e-30)
    torch.testing.assert_close(telemetry[1], ratio, atol=0, rtol=1e-5, msg="sg_norm_ratio")


def test_public_fused_function_and_zero_prediction(nan_poison, triton_device):
    """Through autograd as SyntheticBoundary.fit calls it; a zero prediction (the
    synthesizer's first step) gives cos 0 and ratio 0, as F.cosine_similarity does."""
    target = torch.randn(4, 50)
    for pred in (torch.randn(4, 50), torch.zeros(4, 50)):
        pred.requires_grad_()
        upstream = torch.randn(())
        got = sg_mse_loss_with_stats(pred, target, target_scale=3.0, backend="triton")
        ref = sg_mse_loss_with_stats_reference(pred, target, 3.0)
        for a, e, what in zip(got, ref, ("loss", "cos", "ratio"), strict=True):
            assert a.shape == () and a.dtype == torch.float32, what
            torch.testing.assert_close(a.detach(), e, atol=1e-6, rtol=1e-5, msg=what)
        assert not got[1].requires_grad and not got[2].requires_grad
        (g,) = torch.autograd.grad(got[0], pred, upstream)
        (g_ref,) = torch.autograd.grad(ref[0], pred, upstream)
        check(g, g_ref, torch.float32, "dpred")
    assert ref[1] == 0 and ref[2] == 0


def test_the_fit_pass_is_one_launch(monkeypatch, triton_device):
    launches = []
    real = mod.launch
    monkeypatch.setattr(mod, "launch", lambda *a, **k: launches.append(a[0]) or real(*a, **k))
    pred = torch.randn(3, 40, requires_grad=True)
    loss, _, _ = sg_mse_loss_with_stats(pred, torch.randn(3, 40), backend="triton")
    loss.backward()
    assert launches == ["sg_loss"]


def test_ticket_counters_are_cached_zero_and_grow():
    cpu = torch.device("cpu")
    first = ticket_counters(cpu)
    assert first.dtype == torch.int32 and first.numel() >= 1 and not first.any()
    assert ticket_counters(cpu, 2) is first
    grown = ticket_counters(cpu, first.numel() + 1)
    assert grown.numel() > first.numel() and not grown.any()
    assert ticket_counters(cpu) is grown


def test_telemetry_needs_a_batch_of_rows(triton_device):
    with pytest.raises(ValueError, match=r"pred must be \[B, D\] .*got \(5,\)"):
        sg_mse_loss_with_stats(torch.rand(5), torch.rand(5), backend="triton")


def test_stats_reference_is_the_trainers_formula():
    """The reference as SyntheticBoundary.fit wrote it before the kernel took it over."""
    pred, target = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    loss, cos, ratio = sg_mse_loss_with_stats_reference(pred, target, 5.0)
    p, t = pred.float(), (target * 5.0).float()
    torch.testing.assert_close(loss, (p - t).pow(2).mean())
    torch.testing.assert_close(cos, F.cosine_similarity(p, t, dim=1, eps=1e-30).mean())
    torch.testing.assert_close(ratio, p.norm() / t.norm())


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cpu_tensors_take_the_stats_reference(backend, monkeypatch):
    monkeypatch.setattr(mod, "sg_loss_forward", lambda *a, **k: pytest.fail("Triton used"))
    pred, target = torch.randn(3, 7, requires_grad=True), torch.randn(3, 7)
    got = sg_mse_loss_with_stats(pred, target, target_scale=2.0, backend=backend)
    for a, e in zip(got, sg_mse_loss_with_stats_reference(pred, target, 2.0), strict=True):
        assert torch.equal(a, e)


def test_reference_gradcheck_float64():
    """The reference computes in fp32 by contract, so finite differences use eps=1e-3."""
    pred = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda p: sg_mse_loss_reference(p, target), (pred,), eps=1e-3, atol=1e-3, rtol=1e-3
    )


def test_torch_backend_is_the_reference():
    pred, target = torch.randn(37, requires_grad=True), torch.randn(37)
    assert torch.equal(
        sg_mse_loss(pred, target, backend="torch"), sg_mse_loss_reference(pred, target)
    )


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cpu_tensors_take_the_reference_path(backend, monkeypatch):
    monkeypatch.setattr(mod, "sg_loss_forward", lambda *a, **k: pytest.fail("Triton used"))
    pred, target = torch.randn(37, requires_grad=True), torch.randn(37)
    assert torch.equal(
        sg_mse_loss(pred, target, backend=backend), sg_mse_loss_reference(pred, target)
    )


@pytest.mark.parametrize(
    "pred, target, match",
    [
        (torch.rand(4, 5), torch.rand(5, 4), r"target must have shape \(4, 5\), got \(5, 4\)"),
        (torch.rand(4), torch.ones(4, dtype=torch.int64), r"target has dtype torch.int64; allowed"),
        (torch.rand(4, dtype=torch.float64), torch.rand(4), r"pred has dtype torch.float64"),
        (torch.rand(0), torch.rand(0), r"pred must have 1 to 2\*\*31 - 1 elements, got 0"),
    ],
    ids=["shape", "target-int", "pred-float64", "empty"],
)
def test_clear_value_errors(pred, target, match, triton_device):
    with pytest.raises(ValueError, match=match):
        sg_mse_loss(pred.to(triton_device), target.to(triton_device), backend="triton")


# ------------------------------------------------------------------ the tuning seam


def test_registry_lists_every_kernel_family():
    import altgrad_triton.kernels  # noqa: F401  (imports every family, which registers)

    assert {
        "fo_pool_fwd",
        "fo_pool_bwd",
        "sg_loss",
        "elementwise_fwd",
        "elementwise_bwd",
    } <= set(tuning.kernels())
    for name in tuning.kernels():
        metas = tuning.candidates(name)
        assert metas and all("num_warps" in m for m in metas), name
    assert tuning.candidates("sg_loss") == mod.configs_sg_loss()


def test_override_roundtrip_and_validation(monkeypatch):
    key = ("bfloat16", 1024)
    try:
        tuning.set_override("sg_loss", key, {"BLOCK": 512, "num_warps": 4})
        assert tuning.get_override("sg_loss", key) == {"BLOCK": 512, "num_warps": 4}
        assert tuning.pick("sg_loss", key, lambda: {"BLOCK": 1}) == {
            "BLOCK": 512,
            "num_warps": 4,
        }
        tuning.set_override("sg_loss", key, None)
        assert tuning.get_override("sg_loss", key) is None
    finally:
        tuning.clear_overrides()
    # no override: the heuristic under the interpreter, autotune (None) otherwise
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert tuning.pick("sg_loss", key, lambda: {"BLOCK": 1}) == {"BLOCK": 1}
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert tuning.pick("sg_loss", key, lambda: {"BLOCK": 1}) is None
    with pytest.raises(ValueError, match=r"keys \['block'\]"):
        tuning.set_override("sg_loss", key, {"block": 512})
    with pytest.raises(ValueError, match="unknown kernel 'nope'"):
        tuning.candidates("nope")
    assert tuning.size_bucket(1) == 1 and tuning.size_bucket(1000) == 1024
    assert tuning.size_bucket(1024) == 1024


def test_to_triton_splits_launch_options():
    (cfg,) = tuning.to_triton([{"BLOCK": 256, "num_warps": 2, "num_stages": 1}])
    assert cfg.kwargs == {"BLOCK": 256} and cfg.num_warps == 2 and cfg.num_stages == 1


@pytest.mark.parametrize("per_row, programs", [(1000, None), (1000, 2), (5000, 3), (300, 2)])
def test_each_programs_slice_starts_256_aligned(monkeypatch, per_row, programs, triton_device):
    """The chunk handed to the kernel is the 256-aligned one ``_programs_per_row`` sized J
    with (1000 elements over J=2 must be 512 + 488, not 500 + 500), and the loss still
    equals PyTorch's."""
    from altgrad_triton.kernels import sg_loss as mod

    seen = []
    real = mod.launch
    monkeypatch.setattr(
        mod, "launch", lambda *a, **kw: seen.append(kw["args"][10]) or real(*a, **kw)
    )
    pred = torch.randn(1, per_row, device=triton_device)
    target = torch.randn(1, per_row, device=triton_device)
    loss, _, _ = mod.sg_loss_forward(pred, target, want_grad=False, programs_per_row=programs)
    assert seen and seen[0] % 256 == 0, seen
    torch.testing.assert_close(loss, F.mse_loss(pred, target), rtol=1e-5, atol=0)
