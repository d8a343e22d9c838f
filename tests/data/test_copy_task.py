"""The copy task's batches (``data/copy_task.py``): their layout, reproducible and validated."""

from __future__ import annotations

import pytest
import torch

from altgrad_triton.data import COPY_VOCABULARY, CopyToken, copy_task_batch, copy_task_length
from altgrad_triton.errors import UserError


@pytest.mark.parametrize(("n", "repeats"), [(1, 1), (5, 1), (4, 3)])
def test_copy_task_batch_layout(n, repeats):
    batch = copy_task_batch(n, 6, torch.Generator().manual_seed(1), repeats=repeats)
    length = copy_task_length(n, repeats)
    assert length == n + 1 + repeats + n * repeats + 1
    for t in batch:
        assert t.shape == (length, 6)
    inputs, targets, mask = batch
    assert inputs.dtype == targets.dtype == torch.long and mask.dtype == torch.bool
    bits = inputs[:n]
    assert ((bits == CopyToken.ZERO) | (bits == CopyToken.ONE)).all()
    assert (inputs[n] == CopyToken.STOP).all()
    assert (inputs[n + 1 : n + 1 + repeats] == CopyToken.REPEAT).all()
    assert (inputs[n + 1 + repeats :] == CopyToken.BLANK).all()
    recall = n + 1 + repeats
    assert not mask[:recall].any() and mask[recall:].all()
    assert torch.equal(targets[recall:-1], bits.repeat(repeats, 1))
    assert (targets[-1] == CopyToken.STOP).all()
    assert (targets[:recall] == CopyToken.BLANK).all()
    assert int(inputs.max()) < len(COPY_VOCABULARY) == len(CopyToken)


def test_copy_task_batch_reproducible_and_validated():
    a = copy_task_batch(16, 32, torch.Generator().manual_seed(3), repeats=2)
    b = copy_task_batch(16, 32, torch.Generator().manual_seed(3), repeats=2)
    c = copy_task_batch(16, 32, torch.Generator().manual_seed(4), repeats=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.inputs, c.inputs)
    with pytest.raises(UserError):
        copy_task_batch(0, 4, None)
    with pytest.raises(UserError):
        copy_task_batch(4, 4, None, repeats=0)
