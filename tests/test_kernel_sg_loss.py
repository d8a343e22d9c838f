"""SG regression loss: the fused Triton kernel (interpreter or GPU) against the reference,
plus the tuning-seam registry in ``kernels/tuning.py`` that every kernel family uses."""

import sys

import pytest
import torch
from altgrad_triton.kernels import tuning
from altgrad_triton.kernels.sg_loss import sg_mse_loss, sg_mse_loss_reference

mod = sys.modules["altgrad_triton.kernels.sg_loss"]  # the module, not the function

# (atol, rtol) per dtype: the loss is an fp32 sum in both; the gradient is stored in pred's
# dtype and scaled by the upstream scalar.
TOL = {torch.float32: (1e-6, 1e-5), torch.float16: (1e-3, 2e-3)}

# ragged sizes; 5000 runs 3 programs under the interpreter (chunks of 2048 elements), 5 on
# a GPU (chunks of 1024)
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
    """A forced 256-element tile: each program walks its chunk (2048 elements under the
    interpreter, 1024 on a GPU) in several tiles."""
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
    monkeypatch.setattr(mod, "sg_mse_loss_forward", lambda *a, **k: pytest.fail("Triton used"))
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
