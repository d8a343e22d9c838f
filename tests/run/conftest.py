"""Fixtures of the run-folder and checkpoint tests: finished runs, and a built one whose
position a save must carry."""

import pytest
import torch

from altgrad_triton.config.recipe import to_toml
from altgrad_triton.run.metrics import EpochSums
from altgrad_triton.run.train import Trainer
from tests.helpers import TINY_RUN, tiny_corpus, tiny_recipe

SYNTH = {"enabled": True, "synthesizer": "toolkit", "hidden": 6}


@pytest.fixture
def finished(corpus_dir, tmp_path):
    """A one-epoch run of the tiny model, and its recipe."""
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"max_batches": 5, "epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    return r, tmp_path / "runs" / "tiny"


@pytest.fixture
def trainer(tmp_path):
    """A built (untrained) run with a synthesizer, its position set to distinctive values."""
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", synthetic=SYNTH)
    t = Trainer(r, tmp_path / "runs" / "tiny")
    run = t.run_state
    run.epoch, run.best_val, run.val_losses = 3, 1.25, [2.0, 1.25]
    run.sums = EpochSums(segment=4, tokens=128, loss=9.5)
    run.carried = tuple(torch.randn_like(s) for s in t.parts.model.init_state(4))
    t.log.lowest_sg_loss = 0.5
    with torch.no_grad():  # weights no fresh build has
        for p in t.parts.model.parameters():
            p.add_(1.0)
    return t


@pytest.fixture
def run_a(tmp_path):
    """A finished one-epoch run ``A`` (checkpoints best and last) and its recipe file."""
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "x", run={**TINY_RUN, "name": "A"})
    (tmp_path / "tiny.toml").write_text(to_toml(r))
    Trainer(r, tmp_path / "x" / "A").fit()
    return tmp_path / "x" / "A", tmp_path / "tiny.toml"
