"""Batches and segments (``data/batching.py``): batchify's columns, targets shifted by one,
fixed and random segment lengths."""

from __future__ import annotations

import pytest
import torch

from altgrad_triton.data import batchify, get_segment, segment_lengths
from altgrad_triton.errors import UserError


def test_batchify_shapes_and_columns():
    data = torch.arange(103)
    batched = batchify(data, 4)
    assert batched.shape == (25, 4) and batched.is_contiguous()
    assert batched[:, 1].tolist() == list(range(25, 50))  # each column is a contiguous stream
    with pytest.raises(UserError):
        batchify(torch.arange(7), 4)  # one step per column: no target
    with pytest.raises(UserError):
        batchify(data, 0)


def test_get_segment_shifts_targets_by_one():
    source = batchify(torch.arange(40), 2)  # [20, 2]
    inputs, targets = get_segment(source, 3, 5)
    assert inputs.shape == targets.shape == (5, 2)
    assert torch.equal(targets, source[4:9]) and torch.equal(inputs, source[3:8])
    get_segment(source, 14, 5)  # the last row is only a target
    with pytest.raises(ValueError):
        get_segment(source, 15, 5)


def test_segment_lengths_fixed_when_not_random():
    segments = segment_lengths(101, 35, random_length=False, generator=None)
    assert segments == [(0, 35), (35, 35), (70, 30)]


def test_segment_lengths_random_reproducible_bounded_and_covering():
    n_steps, bptt = 5000, 20
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    first = segment_lengths(n_steps, bptt, True, g)
    g.set_state(state)  # resume: same state, same segments
    assert segment_lengths(n_steps, bptt, True, g) == first
    other = segment_lengths(n_steps, bptt, True, torch.Generator().manual_seed(8))
    assert other != first
    starts = [s.start for s in first]
    assert starts[0] == 0
    assert all(a.start + a.length == b.start for a, b in zip(first, first[1:], strict=False))
    assert first[-1].start + first[-1].length == n_steps - 1  # every target row is covered
    assert all(s.length >= 5 for s in first[:-1])
    assert all(s.start + s.length + 1 <= n_steps for s in first)  # targets fit inside
    lengths = [s.length for s in first[:-1]]
    assert len(set(lengths)) > 5  # actually random
    assert sum(1 for n in lengths if n <= 15) >= 1  # some drawn around bptt / 2
    mean = sum(lengths) / len(lengths)
    assert 18 < mean < 21  # 0.95 * 20 + 0.05 * 10, minus the int() truncation


def test_segment_lengths_respect_the_floor_of_five():
    segments = segment_lengths(200, 3, True, torch.Generator().manual_seed(0))
    assert all(s.length >= 5 for s in segments[:-1])
    with pytest.raises(UserError):
        segment_lengths(100, 0, False, None)
