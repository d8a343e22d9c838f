"""Batches and truncated-BPTT segments, AWD-LSTM style.

A split is cut into ``batch_size`` contiguous columns (:func:`batchify`) and read top to
bottom in segments; the recurrent state is carried from one segment to the next, so a
segment's targets are its inputs shifted by one step. During training AWD-LSTM varies
the segment length so that no token always sits at the same offset in a segment:
:func:`segment_lengths` draws those lengths from a ``torch.Generator`` that the caller
owns and seeds per epoch (the trainer from the run's seed and the epoch number), which makes
a run reproducible and an epoch resumable.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from altgrad_triton.errors import UserError

MIN_SEGMENT = 5
"""AWD-LSTM's floor on a drawn segment length (a very short segment wastes a step)."""

HALF_LENGTH_PROB = 0.05
"""Probability that the base length of a segment is ``bptt / 2`` instead of ``bptt``."""

LENGTH_STD = 5.0
"""Standard deviation of the normal draw around the base length."""


class Segment(NamedTuple):
    """Rows ``start .. start+length-1`` are inputs; rows ``start+1 .. start+length`` targets."""

    start: int
    length: int


def check_batch_size(n_tokens: int, batch_size: int, key: str = "batch size") -> None:
    """UserError naming ``key`` unless ``batch_size`` columns of ``n_tokens`` tokens each get
    at least 2 (an input and its target). Checked for every split when a run starts, so a
    test batch size that does not fit fails before the training, not after it."""
    if batch_size < 1:
        raise UserError(f"{key}: must be >= 1, got {batch_size}")
    n_steps = n_tokens // batch_size
    if n_steps < 2:
        raise UserError(
            f"{key}: {batch_size} leaves {n_steps} step(s) per column of a {n_tokens:,}-token"
            " split; each column needs at least 2 (input and target): use a smaller one"
        )


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D id sequence into ``batch_size`` columns: a ``[n_steps, batch_size]`` tensor.

    Column ``b`` holds tokens ``b*n_steps .. (b+1)*n_steps - 1``: each column is a
    contiguous stream whose state the model carries across segments. The remainder that
    does not fill a row is dropped (at most ``batch_size - 1`` tokens), as in AWD-LSTM.
    """
    if data.dim() != 1:
        raise ValueError(f"batchify expects a 1-D tensor, got shape {tuple(data.shape)}")
    check_batch_size(data.size(0), batch_size)
    n_steps = data.size(0) // batch_size
    return data[: n_steps * batch_size].view(batch_size, n_steps).t().contiguous()


def segment_lengths(
    n_steps: int,
    bptt: int,
    random_length: bool,
    generator: torch.Generator | None = None,
) -> list[Segment]:
    """The segments that cover ``n_steps`` rows of a batchified split, in order.

    Fixed (``random_length`` False, evaluation): ``bptt`` rows each, the last one shorter.
    Random (training, AWD-LSTM): base = ``bptt`` with probability 0.95, else ``bptt / 2``;
    length = ``max(5, int(normal(base, 5)))``, cut short where it would overrun the data
    (so only the final segment may be shorter than 5). Two draws per segment come from
    ``generator`` (the global torch RNG when None). The whole epoch's list is drawn up
    front: save the generator state *before* calling, and a resumed epoch redraws the same
    list and skips the segments already done. The caller scales the learning rate by
    ``length / bptt`` if it follows AWD-LSTM.
    """
    if bptt < 1:
        raise UserError(f"bptt must be >= 1, got {bptt}: fix the recipe")
    last = n_steps - 1  # the final row is only ever a target
    segments: list[Segment] = []
    start = 0
    while start < last:
        if random_length:
            half = torch.rand((), generator=generator).item() < HALF_LENGTH_PROB
            base = bptt / 2 if half else float(bptt)
            drawn = torch.normal(base, LENGTH_STD, (), generator=generator).item()
            length = max(MIN_SEGMENT, int(drawn))
        else:
            length = bptt
        length = min(length, last - start)
        segments.append(Segment(start, length))
        start += length
    return segments


def get_segment(
    source: torch.Tensor, start: int, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``source[start : start+seq_len]`` and targets one row later, both ``[seq_len, B]``.

    Views, not copies. Raises ValueError when the targets would run past the data.
    """
    if start < 0 or seq_len < 1 or start + seq_len >= source.size(0):
        raise ValueError(
            f"segment start={start} seq_len={seq_len} does not fit {source.size(0)} rows "
            "(targets need start + seq_len < n_steps)"
        )
    return source[start : start + seq_len], source[start + 1 : start + 1 + seq_len]
