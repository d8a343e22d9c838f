"""``run.backend = "cudnn"`` on a GPU: cuDNN's LSTM against the reference and the Triton
kernel, and a short training run through it (with fused Adam)."""

import pytest
import torch

from altgrad_triton.core.cells import LSTM
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def no_tf32(monkeypatch):
    """fp32 comparisons in fp32: cuDNN and the Triton kernel would take TF32 otherwise."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("T", "B", "H"), [(5, 3, 40), (33, 20, 650)])
def test_cudnn_lstm_matches_the_reference_and_the_triton_kernel(no_tf32, dtype, T, B, H):
    torch.manual_seed(0)
    cells = {b: LSTM(H // 2, H, backend=b).cuda() for b in ("torch", "cudnn", "triton")}
    for cell in cells.values():
        cell.load_state_dict(cells["torch"].state_dict())
    x = torch.randn(T, B, H // 2, device="cuda")
    state = (torch.randn(B, H, device="cuda"), torch.randn(B, H, device="cuda"))
    out, grads = {}, {}
    for name, cell in cells.items():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            hs, (h, c) = cell(x, state)
        loss = hs.float().square().sum() + h.float().sum() + c.sum()
        grads[name] = torch.autograd.grad(loss, list(cell.parameters()))
        out[name] = hs.float()
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-2}
    for name in ("cudnn", "triton"):
        torch.testing.assert_close(out[name], out["torch"], **tol)
        for a, b in zip(grads[name], grads["torch"], strict=True):
            scale = b.abs().max().clamp_min(1e-6)
            torch.testing.assert_close(a / scale, b / scale, **tol)


def test_training_through_cudnn_with_fused_adam(tmp_path):
    r = tiny_recipe(
        tiny_corpus(tmp_path / "data"),
        tmp_path / "runs",
        run={"device": "cuda", "backend": "cudnn", "epochs": 1, "max_batches": 4},
        synthetic={"enabled": True, "synthesizer": "elementwise", "hidden": 6},
    )
    trainer = Trainer(r, tmp_path / "runs" / "tiny")
    assert trainer.parts.optimizer.defaults["fused"]
    results = trainer.fit()
    assert results["best_val_loss"] < 10
    (row,) = trainer.log.rows()
    assert 0 < row["peak_mem_gib"] < torch.cuda.get_device_properties(0).total_memory / 2**30
