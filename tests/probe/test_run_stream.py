"""A trained run as the probe sees it (``probe/run_stream.py``): its token stream in the
columns it trained or was evaluated on, and its synthesizer as a predictor at a boundary
(a conditioned one reading the next tokens' embeddings)."""

from __future__ import annotations

import pytest
import torch

from altgrad_triton import data
from altgrad_triton.core.boundary import SyntheticBoundary
from altgrad_triton.core.model import RNNLanguageModel, next_tokens_context
from altgrad_triton.core.synthesizers import LinearSynthesizer
from altgrad_triton.probe.run_stream import boundary_predictor, stream_tokens
from altgrad_triton.run.inference import load_run
from tests.helpers import tiny_recipe, trained_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(trained_tiny_run(tmp_path_factory.mktemp("stream")), "best", device="cpu")


def test_the_train_split_streams_in_the_training_columns_the_others_in_the_eval_ones(run):
    train = stream_tokens(run, "train")
    assert train.shape[1] == run.recipe.data.batch_size == 4
    assert torch.equal(train, data.batchify(run.split("train"), 4))
    valid = stream_tokens(run, "valid")
    assert valid.shape[1] == run.recipe.data.eval_batch_size == 2
    assert torch.equal(valid, data.batchify(run.split("valid"), 2))


@pytest.mark.parametrize("context_tokens", [0, 2])
def test_the_predictor_is_the_boundarys_synthesizer_in_gradient_units(tmp_path, context_tokens):
    recipe = tiny_recipe(
        tmp_path, tmp_path, synthetic={"enabled": True, "context_tokens": context_tokens}
    )
    model = RNNLanguageModel(20, cell="lstm", emb_size=6, hidden_size=6, layers=1)
    boundary = SyntheticBoundary(LinearSynthesizer(12), None, 1.0, target_scale=50.0)
    tokens = torch.randint(0, 20, (30, 3), generator=torch.Generator().manual_seed(0))
    predictor = boundary_predictor(boundary, model, recipe, tokens)
    assert predictor.synthesizer is boundary.synthesizer and predictor.target_scale == 50.0
    if not context_tokens:
        assert predictor.context is None
        return
    bptt = recipe.bptt.length  # boundary k is before row k * bptt
    for k in (0, 2):
        want = next_tokens_context(tokens, model.embedding.weight, k * bptt, 2)
        assert predictor.context(k).shape == (3, 2 * 6)
        assert torch.equal(predictor.context(k), want)
