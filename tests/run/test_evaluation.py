"""Evaluation (``run/evaluation.py``): the mean cross-entropy per token of a split, its state
carried across segments, without dropout, equals the loss of one forward pass over the
whole batchified stream computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from altgrad_triton import data
from altgrad_triton.core.model import Dropouts, RNNLanguageModel
from altgrad_triton.run.evaluation import Evaluation, evaluate

VOCAB, BATCH, BPTT = 13, 2, 5
CPU = torch.device("cpu")


def model_with_dropout(cell: str) -> RNNLanguageModel:
    """A small model left in training mode, with every dropout on: evaluate must turn it off."""
    torch.manual_seed(0)
    dropout = Dropouts(input=0.4, hidden=0.3, output=0.4, embedding=0.1, weight=0.2)
    model = RNNLanguageModel(
        VOCAB, cell=cell, emb_size=6, hidden_size=7, layers=2, dropout=dropout, backend="torch"
    )
    return model.train()


def tokens(n: int = 43) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(1))


def by_hand(model: RNNLanguageModel, stream: torch.Tensor, rows: int | None = None) -> float:
    """The mean cross-entropy of one forward call over the first ``rows`` input rows of the
    batchified stream (all of them by default), from a zero state, in eval mode."""
    source = data.batchify(stream, BATCH)
    rows = source.shape[0] - 1 if rows is None else rows
    model.eval()
    with torch.no_grad():
        out = model(source[:rows], model.init_state(BATCH))
        logits = out.logits.reshape(-1, VOCAB).double()
        return F.cross_entropy(logits, source[1 : rows + 1].reshape(-1)).item()


@pytest.mark.parametrize("cell", ["lstm", "qrnn"])
def test_the_loss_is_the_mean_cross_entropy_of_the_whole_stream_in_eval_mode(cell):
    model, stream = model_with_dropout(cell), tokens()
    got = evaluate(model, stream, BATCH, BPTT, device=CPU)
    assert not model.training  # dropout off
    # 43 tokens in 2 columns: 21 rows, 20 targets per column, in segments of 5, 5, 5, 5
    assert got == pytest.approx(by_hand(model, stream), rel=1e-6)


def test_the_segment_length_changes_nothing_but_where_the_segments_end():
    model, stream = model_with_dropout("lstm"), tokens()
    losses = [evaluate(model, stream, BATCH, bptt, device=CPU) for bptt in (1, 3, 5, 50)]
    assert losses == pytest.approx([losses[0]] * 4, rel=1e-6)


def test_max_segments_scores_the_first_segments_only():
    model, stream = model_with_dropout("qrnn"), tokens()
    got = evaluate(model, stream, BATCH, BPTT, device=CPU, max_segments=2)
    assert got == pytest.approx(by_hand(model, stream, rows=2 * BPTT), rel=1e-6)
    assert got != pytest.approx(by_hand(model, stream), rel=1e-6)


def test_progress_is_called_once_per_segment():
    model, stream = model_with_dropout("lstm"), tokens()
    calls = []
    evaluate(model, stream, BATCH, BPTT, device=CPU, progress=lambda *a: calls.append(a))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_runs_evaluation_is_evaluate_with_its_segment_length_dtype_and_cap():
    model, stream = model_with_dropout("lstm"), tokens()
    run = Evaluation(bptt=BPTT, dtype="float32", max_segments=3)
    want = evaluate(model, stream, BATCH, BPTT, device=CPU, max_segments=3)
    assert run(model, stream, BATCH, CPU) == want
    assert Evaluation(BPTT, "float32", 0)(model, stream, BATCH, CPU) == pytest.approx(
        by_hand(model, stream), rel=1e-6
    )
