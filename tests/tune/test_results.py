"""What a sweep found (``tune/results.py``): a trial is ok when it was timed, and the
winner is the fastest ok trial by its median."""

from __future__ import annotations

import torch

from altgrad_triton import tune
from altgrad_triton.tune.results import SweepResult, Trial


def job():
    return tune.fo_pool_jobs(2, 3, 16, torch.float32)[0]


def test_the_winner_is_the_ok_trial_with_the_lowest_median():
    slow = Trial({"BLOCK_H": 8}, timing=(2.0, 1.0, 3.0))
    fast = Trial({"BLOCK_H": 16}, timing=(1.5, 1.4, 9.0))  # the median decides, not p20
    failed = Trial({"BLOCK_H": 24}, error="CompilationError: arange's range must be a power of 2")
    result = SweepResult(job(), [slow, failed, fast])
    assert [t.ok for t in result.trials] == [True, False, True]
    assert result.winner is fast


def test_a_sweep_without_an_ok_trial_has_no_winner():
    assert SweepResult(job()).winner is None
    assert SweepResult(job(), [Trial({"BLOCK_H": 24}, error="boom")]).winner is None
