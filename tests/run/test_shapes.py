"""The kernel shapes of a recipe (``run/shapes.py``), as altgrad-tune reads them."""

from pathlib import Path

import pytest
import torch

from altgrad_triton import tune
from altgrad_triton.config import recipe as recipes

pytestmark = pytest.mark.usefixtures("no_kernel_overrides")

REPO = Path(__file__).resolve().parents[2]
WT2 = REPO / "recipes" / "wt2.toml"
WT2_LSTM = REPO / "recipes" / "wt2-lstm.toml"


def test_shapes_from_wt2_recipe():
    s = tune.shapes_from_recipe(recipes.load(WT2))
    assert s.cell == "qrnn"
    assert s.batch == 20 and s.bptt == 200
    assert s.hidden == (1550, 1550, 1550, 400)
    assert s.dtype == torch.float32
    # joined state: layer 1 carries (c 1550, last input 400: window 2), layers 2-3 c 1550,
    # layer 4 c 400 (tied to the 400-dim embedding)
    assert s.state_size == 1550 + 400 + 1550 + 1550 + 400 == 5450
    assert s.state_elements == 20 * 5450
    assert s.synthetic and s.synthesizer == "toolkit" and s.synth_hidden == 50
    bf16 = tune.shapes_from_recipe(recipes.load(WT2, ["run.dtype=bfloat16"]))
    assert bf16.dtype == torch.bfloat16


def test_shapes_from_wt2_lstm_recipe():
    s = tune.shapes_from_recipe(recipes.load(WT2_LSTM))
    assert s.cell == "lstm" and s.hidden == (1150, 1150, 400)
    assert s.state_size == 2 * (1150 + 1150 + 400)  # (h, c) per layer
