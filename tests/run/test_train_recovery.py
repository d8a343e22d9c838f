"""The trainer (``run/train.py``): a resume from 'best' when 'last' is missing, a full disk
during a save, Ctrl-C during the last validation, and the PyTorch and Triton backends
training identically (on the CPU through the interpreter, on CUDA on a GPU machine, in
fp32 without TF32 so that both paths compute the same thing)."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch
from altgrad_triton.kernels import interpreting

from altgrad_triton import files
from altgrad_triton.errors import UserError
from altgrad_triton.run.checkpoint import store
from altgrad_triton.run.train import Trainer, TrainingStopped
from tests.helpers import failing_writes, tiny_corpus, tiny_recipe


def epochs(run_dir):
    return [row["epoch"] for row in files.read_jsonl(run_dir / "metrics.jsonl")]


# ---------------------------------------------------------------------------- resume


def test_resuming_from_best_when_last_is_missing_continues_exactly(corpus_dir, tmp_path):
    straight = tiny_recipe(corpus_dir, tmp_path / "a", run={"max_batches": 10})
    Trainer(straight, tmp_path / "a" / "tiny").fit()
    first = Trainer(
        tiny_recipe(corpus_dir, tmp_path / "b", run={"max_batches": 10}), tmp_path / "b" / "tiny"
    )
    first.run_epoch(first.parts.plan(1))
    shutil.rmtree(tmp_path / "b" / "tiny" / "checkpoints" / "last")  # the save that was cut off
    more = tiny_recipe(corpus_dir, tmp_path / "b", run={"max_batches": 10})
    again = Trainer(more, tmp_path / "b" / "tiny")
    again.restore("best")
    again.fit()
    a = files.read_jsonl(tmp_path / "a" / "tiny" / "metrics.jsonl")
    b = files.read_jsonl(tmp_path / "b" / "tiny" / "metrics.jsonl")
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


# ---------------------------------------------------------------------------- full disk


def test_a_full_disk_during_a_save_keeps_the_checkpoints_and_says_so(
    corpus_dir, tmp_path, monkeypatch
):
    r = tiny_recipe(corpus_dir, tmp_path, run={"max_batches": 5, "epochs": 3})
    run = tmp_path / "tiny"
    trainer = Trainer(r, run)
    trainer.run_epoch(trainer.parts.plan(1))
    saved = (run / "checkpoints" / "last" / "model.safetensors").read_bytes()
    # epoch 2's first checkpoint file onwards: the disk is full
    failing_writes(monkeypatch, store, "write_file", errno.ENOSPC, when=1)
    with pytest.raises(UserError) as e:
        trainer.fit()
    assert e.value.exit_code == 1 and "\n" not in str(e.value)
    assert str(e.value).startswith(f"cannot write {run / 'checkpoints'}/.")
    assert "(No space left on device); the run stopped and kept " in str(e.value)
    assert f"{run / 'checkpoints' / 'last'} (resumes at epoch 2) and best (after epoch 1)" in str(
        e.value
    )
    assert str(e.value).endswith(f"continue with: altgrad-train --resume {run}")
    assert (run / "checkpoints" / "last" / "model.safetensors").read_bytes() == saved
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last"]
    monkeypatch.undo()
    again = Trainer(r, run)
    again.restore("last")
    again.fit()
    assert epochs(run) == [1, 2, 3]


# ---------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_the_last_validation_stops_after_saving(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path, run={"max_batches": 5})
    trainer = Trainer(r, tmp_path / "tiny")
    real_evaluate = trainer.parts.evaluate

    def ctrl_c_in_the_last_validation(*args, **kwargs):
        if trainer.run_state.epoch == 2:
            trainer.stops.request()
        return real_evaluate(*args, **kwargs)

    trainer.parts.evaluate = ctrl_c_in_the_last_validation
    with pytest.raises(TrainingStopped) as e:
        trainer.fit()
    assert e.value.exit_code == 130
    assert str(e.value) == (
        f"interrupted after epoch 2; saved. Continue with: altgrad-train --resume "
        f"{tmp_path / 'tiny'}"
    )
    assert not (tmp_path / "tiny" / "results.json").exists()  # no test of an unasked run
    again = Trainer(r, tmp_path / "tiny")
    again.restore("last")
    again.fit()  # nothing left to train: the test of the best checkpoint
    assert epochs(tmp_path / "tiny") == [1, 2] and (tmp_path / "tiny" / "results.json").exists()


# ---------------------------------------------------------------------------- backends

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
