"""A trained run as the probe sees it: its token stream in the columns it trained or was
evaluated on, and its synthesizer as a predictor at a boundary. Shared by the probe of a run
(``on_run``) and the synthesizers fitted on one (``fit``)."""

from __future__ import annotations

import torch

from .. import data
from ..config.recipe import Recipe
from ..core.boundary import SyntheticBoundary
from ..core.model import RNNLanguageModel, next_tokens_context
from ..run.inference import LoadedRun
from ..run.values import run_values
from .truncation import SynthesizerPredictor


def stream_tokens(run: LoadedRun, split: str) -> torch.Tensor:
    """The split's ids in the columns the run used: ``data.batch_size`` for train (the
    trajectory the synthesizer was fitted on), ``data.eval_batch_size`` otherwise."""
    v = run.values
    columns = v.batch_size if split == "train" else v.eval_batch_size
    ids = run.split(split)
    data.check_batch_size(len(ids), columns, "batch size")
    return data.batchify(ids, columns).to(run.device)


def boundary_predictor(
    boundary: SyntheticBoundary, model: RNNLanguageModel, recipe: Recipe, tokens: torch.Tensor
) -> SynthesizerPredictor:
    """The synthesizer of ``boundary`` as a predictor over ``tokens`` [steps, B] (a
    conditioned one reads the next tokens' embeddings of ``model`` at each boundary)."""
    v = run_values(recipe)
    n, bptt = v.context_tokens, v.bptt
    context = None
    if n:

        def context(k: int) -> torch.Tensor:
            return next_tokens_context(tokens, model.embedding.weight, k * bptt, n)

    return SynthesizerPredictor(boundary.synthesizer, boundary.target_scale, context)
