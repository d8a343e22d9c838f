"""How a run cuts its training split (``run/segments.py``): each epoch's segments are a pure
function of the epoch (the same after a resume), a capped run takes the next window each
epoch, and a random-length segment's learning rate scales with its length."""

from __future__ import annotations

from altgrad_triton import data
from altgrad_triton.run.segments import SegmentPlan


def test_fixed_lengths_cut_every_epoch_alike():
    plan = SegmentPlan(length=5, random_length=False, max_segments=0, seed=3)
    want = data.segment_lengths(31, 5, False, None)
    assert [tuple(s) for s in want] == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 5), (25, 5)]
    assert plan.epoch(31, 1) == plan.epoch(31, 7) == want
    assert plan.steps_before(31, 4) == 3 * 6


def test_a_capped_run_takes_the_next_window_each_epoch_and_wraps():
    plan = SegmentPlan(length=5, random_length=False, max_segments=2, seed=3)
    starts = {e: [s.start for s in plan.epoch(31, e)] for e in (1, 2, 3, 4)}
    assert starts == {1: [0, 5], 2: [10, 15], 3: [20, 25], 4: [0, 5]}
    assert plan.steps_before(31, 3) == 4  # TensorBoard's step axis: 2 segments per epoch


def test_random_lengths_are_the_epochs_own_and_the_same_on_a_resume():
    plan = SegmentPlan(length=10, random_length=True, max_segments=0, seed=7)
    first = plan.epoch(200, 1)
    again = SegmentPlan(length=10, random_length=True, max_segments=0, seed=7).epoch(200, 1)
    assert first == again  # a resumed run (a new plan) cuts epoch 1 the same
    assert plan.epoch(200, 2) != first and SegmentPlan(10, True, 0, 8).epoch(200, 1) != first
    assert len({s.length for s in first}) > 1  # random, not fixed
    assert all(a.start + a.length == b.start for a, b in zip(first, first[1:], strict=False))


def test_a_random_length_segment_gets_a_learning_rate_scaled_by_its_length():
    assert SegmentPlan(10, True, 0, 1).lr(2.0, 5) == 1.0
    assert SegmentPlan(10, True, 0, 1).lr(2.0, 15) == 3.0
    assert SegmentPlan(10, False, 0, 1).lr(2.0, 5) == 2.0  # fixed lengths: the epoch's
