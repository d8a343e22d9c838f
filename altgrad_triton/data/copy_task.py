"""Copy and repeat-copy (Graves et al. 2014, used by the DNI paper for long-range credit).

Generated on the fly, nothing to download. One format serves both tasks; copy is
repeat-copy with ``repeats=1``, so a curriculum can grow the pattern length N and the
repeat count R without changing the vocabulary or the model::

    step     0 .. N-1    N       N+1 .. N+R         N+R+1 .. N+R+N*R   last
    input    b1 .. bN    <stop>  <repeat> x R       <blank> x N*R      <blank>
    target   <blank> ...                            b1..bN  R times    <stop>
    scored   no          no      no                 yes                yes

The pattern is N random bits (tokens 0/1). ``<stop>`` ends the pattern (the recall cue)
and is also what the model must emit after the last repeat, so it has to count R (given
in unary by the ``<repeat>`` tokens) rather than just cycle. Only the recall steps are
scored: ``mask`` is True there and a loss should be averaged over those positions; the
``<blank>`` targets elsewhere are placeholders.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import torch

from altgrad_triton.errors import UserError

from .vocab import Vocabulary


class CopyToken(IntEnum):
    """Token ids of the copy tasks (the index in :data:`COPY_VOCABULARY`)."""

    ZERO = 0
    ONE = 1
    BLANK = 2
    STOP = 3
    REPEAT = 4


COPY_VOCABULARY = Vocabulary(["0", "1", "<blank>", "<stop>", "<repeat>"])
"""The 5-token vocabulary for both tasks, in :class:`CopyToken` order."""


class CopyTaskBatch(NamedTuple):
    """Time-major tensors ``[T, batch_size]``; every column has the same N and R."""

    inputs: torch.Tensor  # long
    targets: torch.Tensor  # long
    mask: torch.Tensor  # bool: True where the target is scored


def copy_task_length(n_bits_pattern_len: int, repeats: int = 1) -> int:
    """Steps in one episode: ``N + 1 + R + N*R + 1``."""
    return n_bits_pattern_len + 1 + repeats + n_bits_pattern_len * repeats + 1


def copy_task_batch(
    n_bits_pattern_len: int,
    batch_size: int,
    generator: torch.Generator | None,
    repeats: int = 1,
) -> CopyTaskBatch:
    """A batch of copy (``repeats=1``) or repeat-copy episodes, drawn from ``generator``.

    Bits come from ``generator`` (the global torch RNG when None), so a curriculum run is
    reproducible and resumable from the generator's saved state. Each episode is
    independent: the model's state should be reset between batches.
    """
    for label, value in (
        ("pattern length", n_bits_pattern_len),
        ("batch size", batch_size),
        ("repeats", repeats),
    ):
        if value < 1:
            raise UserError(f"copy task {label} must be >= 1, got {value}: fix the recipe")
    n, r = n_bits_pattern_len, repeats
    bits = torch.randint(0, 2, (n, batch_size), generator=generator, dtype=torch.long)
    length = copy_task_length(n, r)
    recall = n + 1 + r  # first scored step

    inputs = torch.full((length, batch_size), int(CopyToken.BLANK), dtype=torch.long)
    inputs[:n] = bits
    inputs[n] = CopyToken.STOP
    inputs[n + 1 : recall] = CopyToken.REPEAT

    targets = torch.full((length, batch_size), int(CopyToken.BLANK), dtype=torch.long)
    targets[recall : recall + n * r] = bits.repeat(r, 1)
    targets[-1] = CopyToken.STOP

    mask = torch.zeros((length, batch_size), dtype=torch.bool)
    mask[recall:] = True
    return CopyTaskBatch(inputs, targets, mask)
