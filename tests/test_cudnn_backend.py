"""``run.backend = "cudnn"``: LSTM layers through PyTorch's fused LSTM op (cuDNN on CUDA).

The op also runs on the CPU (PyTorch's native LSTM), which lets CI check the plumbing
(weight layout, the single bias, weight drop on W_hh, the carried state) against the
reference path; tests/gpu/test_gpu_cudnn.py checks it on cuDNN itself.
"""

import pytest
import torch

from altgrad_triton.config import backends
from altgrad_triton.core.cells import LSTM
from altgrad_triton.errors import UserError
from altgrad_triton.run import build
from tests.helpers import tiny_corpus, tiny_recipe


def _pair(weight_drop: float, training: bool) -> tuple[LSTM, LSTM]:
    torch.manual_seed(3)
    ref = LSTM(5, 7, weight_drop=weight_drop, backend="torch")
    fused = LSTM(5, 7, weight_drop=weight_drop, backend="cudnn")
    fused.load_state_dict(ref.state_dict())
    ref.train(training)
    fused.train(training)
    return ref, fused


@pytest.mark.parametrize(("weight_drop", "training"), [(0.0, True), (0.5, True), (0.5, False)])
def test_fused_lstm_matches_the_reference_forward_and_every_gradient(weight_drop, training):
    ref, fused = _pair(weight_drop, training)
    x = torch.randn(6, 3, 5)
    h0, c0 = torch.randn(3, 7), torch.randn(3, 7)
    outs, grads = [], []
    for cell in (ref, fused):
        xs = [t.clone().requires_grad_() for t in (x, h0, c0)]
        torch.manual_seed(11)  # the same weight-drop mask for both
        hs, (h, c) = cell(xs[0], (xs[1], xs[2]))
        assert c.dtype == torch.float32
        up = torch.Generator().manual_seed(5)  # random upstream gradients on every output
        loss = sum((t * torch.randn(t.shape, generator=up)).sum() for t in (hs, h, c))
        params = list(cell.parameters())
        grads.append(torch.autograd.grad(loss, xs + params))
        outs.append((hs, h, c))
    for a, b in zip(outs[0], outs[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    names = ["x", "h0", "c0", "w_ih", "w_hh", "bias"]
    for name, a, b in zip(names, grads[0], grads[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_weight_drop_draws_a_mask_per_call_in_training_only():
    _, fused = _pair(0.5, True)
    x, state = torch.randn(4, 2, 5), (torch.zeros(2, 7), torch.zeros(2, 7))
    a, _ = fused(x, state)
    b, _ = fused(x, state)
    assert not torch.equal(a, b)
    fused.eval()
    assert torch.equal(fused(x, state)[0], fused(x, state)[0])


def test_cudnn_needs_cuda_and_lstm_cells(tmp_path, monkeypatch):
    data = tiny_corpus(tmp_path / "data")
    with pytest.raises(UserError, match="run.backend: 'cudnn' runs LSTM layers, and model.cell"):
        tiny_recipe(data, tmp_path / "runs", run={"backend": "cudnn"}, model={"cell": "qrnn"})
    with pytest.raises(UserError, match="run.backend: 'cudnn' needs a CUDA device, and this run"):
        build.check_backend("cudnn", "lstm", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter makes triton, not cudnn, fine
    build.check_backend("triton", "lstm", torch.device("cpu"))
    with pytest.raises(UserError, match="'cudnn' needs a CUDA device"):
        build.check_backend("cudnn", "lstm", torch.device("cpu"))


def test_cudnn_leaves_the_synthesizer_and_sg_loss_on_the_kernels():
    assert backends.kernel_backend("cudnn") == "auto"
    assert [backends.kernel_backend(b) for b in ("auto", "torch", "triton")] == [
        "auto",
        "torch",
        "triton",
    ]
