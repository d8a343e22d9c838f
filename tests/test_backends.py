"""The trainer gives the same numbers on the PyTorch reference and on the Triton kernels:
the backend switch is invisible to training. Both run where the Triton path can run: on the
CPU through the interpreter (CI), on CUDA on a GPU machine (where the interpreter is off),
in fp32 without TF32 so that the two paths compute the same thing."""

import json

import pytest
import torch
from altgrad_triton.kernels import interpreting

from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe

KEYS = ("train_loss", "val_loss", "sg_loss", "sg_cos", "sg_norm_ratio")


@pytest.fixture
def kernel_device(monkeypatch) -> str:
    if interpreting():
        return "cpu"
    if not torch.cuda.is_available():
        pytest.skip("TRITON_INTERPRET is off and no CUDA device can run the kernels")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    return "cuda"


@pytest.mark.parametrize("cell", ["qrnn", "lstm"])
def test_torch_and_triton_backends_train_identically(tmp_path, cell, kernel_device):
    data = tiny_corpus(tmp_path / "data", n_train=120)
    rows = {}
    for backend in ("torch", "triton"):
        r = tiny_recipe(
            data,
            tmp_path / backend,
            run={
                "epochs": 2,
                "backend": backend,
                "device": kernel_device,
                "max_batches": 3,
                "max_eval_batches": 2,
            },
            model={"cell": cell, "hidden_size": 12, "emb_size": 12},
            synthetic={
                "enabled": True,
                "synthesizer": "toolkit",
                "cell": "qrnn",
                "hidden": 5,
                "alternation": {"start": "synthetic"},
            },
            data={"test_batch_size": 2},
        )
        Trainer(r, tmp_path / backend / "tiny").fit()
        rows[backend] = [
            json.loads(x)
            for x in (tmp_path / backend / "tiny" / "metrics.jsonl").read_text().splitlines()
        ]
    assert [r["mode"] for r in rows["torch"]] == ["synthetic", "synthetic"]
    for a, b in zip(rows["torch"], rows["triton"], strict=True):
        for k in KEYS:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (k, a[k], b[k])
