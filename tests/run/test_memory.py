"""The memory lower bound: it counts the model's parameters exactly, stays below what a
training step really takes, and refuses an impossible model in one line before allocating."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from rich.console import Console

from altgrad_triton.errors import UserError
from altgrad_triton.run import memory
from altgrad_triton.run.build import build_model
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe


@pytest.mark.parametrize(
    "model",
    [
        {"cell": "lstm", "emb_size": 16, "hidden_size": 24, "layers": 3},
        {"cell": "lstm", "emb_size": 16, "hidden_size": 24, "layers": 1, "tie_weights": False},
        {"cell": "qrnn", "emb_size": 16, "hidden_size": 24, "layers": 2, "window": 2},
        {"cell": "qrnn", "emb_size": 8, "hidden_size": 12, "layers": 3, "output_gate": False},
        {"cell": "qrnn", "emb_size": 8, "hidden_size": 12, "layers": 1, "tie_weights": False},
    ],
    ids=["lstm3", "lstm1-untied", "qrnn2-window2", "qrnn3-no-gate", "qrnn1-untied"],
)
def test_the_parameter_count_is_the_models(tmp_path, model):
    r = tiny_recipe(tmp_path, tmp_path, model=model)
    built = build_model(r, 37)
    assert memory.parameter_count(r, 37) == sum(p.numel() for p in built.parameters())


def test_an_impossible_model_is_refused_in_one_line_before_allocating(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    r = tiny_recipe(data, tmp_path, model={"hidden_size": 1_000_000_000})
    with pytest.raises(UserError) as e:
        Trainer(r, tmp_path / "tiny")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("the model does not fit: training needs at least ")
    assert "EiB" in message and "this machine has available (RAM and swap)" in message


def test_a_model_that_fits_is_not_refused_and_the_bound_grows_with_what_it_counts(tmp_path):
    r = tiny_recipe(tmp_path, tmp_path)
    small = memory.estimate(r, 1000, "cpu")
    assert 0 < small.total < memory.available(memory.torch.device("cpu"))[0]
    wide = memory.estimate(tiny_recipe(tmp_path, tmp_path, data={"batch_size": 8}), 1000, "cpu")
    assert wide.activations == 2 * small.activations and wide.weights == small.weights
    halves = memory.estimate(
        tiny_recipe(tmp_path, tmp_path, data={"batch_size": 8}), 1000, "cpu", 2
    )
    assert halves.activations == small.activations  # each of 2 ranks holds half the columns
    sgd = memory.estimate(tiny_recipe(tmp_path, tmp_path, optim={"name": "sgd"}), 1000, "cpu")
    assert sgd.weights == small.parameters * 8  # value + gradient, no momentum buffer
    momentum = tiny_recipe(tmp_path, tmp_path, optim={"name": "sgd", "momentum": 0.9})
    assert memory.estimate(momentum, 1000, "cpu").weights == small.parameters * 12
    assert small.weights == small.parameters * 16  # Adam: + two moments


# One training step of a model whose memory the bound should count, in a fresh process: the
# peak resident memory it adds (the kernel's high-water mark, VmHWM, after the step minus
# VmRSS before the model existed) against the bound.
MEASURE = r"""
import json, sys, torch
from pathlib import Path
from altgrad_triton import memory
from altgrad_triton.data import Vocabulary
from altgrad_triton.data.corpora import Corpus
from altgrad_triton.config.recipe import from_dict

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024

V, B, T = 8000, 32, 70
r = from_dict({
    "run": {"name": "m", "out_dir": sys.argv[1], "device": "cpu", "epochs": 1, "max_batches": 1,
            "max_eval_batches": 1, "log_every": 1000},
    "data": {"corpus": "text", "path": sys.argv[1], "batch_size": B, "eval_batch_size": 2,
             "test_batch_size": 2},
    "model": {"cell": sys.argv[2], "emb_size": 256, "hidden_size": 256, "layers": 2},
    "bptt": {"length": T, "random_length": False},
})
ids = torch.randint(0, V, (B * T * 4,))
words = [f"w{i}" for i in range(V)]
corpus = Corpus("synthetic", "word", Vocabulary(words), ids, ids[:200], ids[:200], {}, True)
from altgrad_triton.run.train import Trainer
before = status("VmRSS")
trainer = Trainer(r, Path(sys.argv[1]) / "m", corpus=corpus)
plan = trainer.parts.plan(1)
trainer.run_state.carried = trainer.parts.model.init_state(B)
trainer.train_segment(0, T, plan)
trainer.train_segment(T, T, plan)
print(json.dumps({"measured": status("VmHWM") - before,
                  "bound": memory.estimate(r, V, "cpu").total}))
"""


@pytest.mark.parametrize("cell", ["lstm", "qrnn"])
def test_the_bound_is_below_a_measured_training_step_and_of_its_order(tmp_path, cell):
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path), cell],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["bound"] <= got["measured"] <= 10 * got["bound"], got


def test_a_one_layer_tied_model_says_once_that_hidden_size_is_not_used(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    out = io.StringIO()
    r = tiny_recipe(data, tmp_path, model={"layers": 1, "hidden_size": 64})
    Trainer(r, tmp_path / "tiny", console=Console(file=out, width=300)).fit()
    note = (
        "note: model.hidden_size = 64 is not used: a 1-layer model with tie_weights has one "
        "layer of model.emb_size = 16 units"
    )
    assert out.getvalue().count(note) == 1
    quiet = io.StringIO()
    Trainer(tiny_recipe(data, tmp_path / "b"), tmp_path / "b", console=Console(file=quiet))
    assert "not used" not in quiet.getvalue()
