"""The trainer gives the same numbers on the PyTorch reference and on the Triton kernels
(run through the interpreter on the CPU): the backend switch is invisible to training."""

import json

import pytest

from altgrad_triton.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe

KEYS = ("train_loss", "val_loss", "sg_loss", "sg_cos", "sg_norm_ratio")


@pytest.mark.parametrize("cell", ["qrnn", "lstm"])
def test_torch_and_triton_backends_train_identically(tmp_path, cell):
    data = tiny_corpus(tmp_path / "data", n_train=120)
    rows = {}
    for backend in ("torch", "triton"):
        r = tiny_recipe(
            data,
            tmp_path / backend,
            run={"epochs": 2, "backend": backend, "max_batches": 3, "max_eval_batches": 2},
            model={"cell": cell, "hidden_size": 12, "emb_size": 12},
            synthetic={
                "enabled": True,
                "synthesizer": "elementwise",
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
