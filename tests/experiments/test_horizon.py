"""The copy-task horizon experiment (``experiments/horizon.py``): curriculum, stream, tiny
runs, table."""

from __future__ import annotations

import json

import pytest
import torch

from altgrad_triton.data.copy_task import CopyToken, copy_task_length
from altgrad_triton.errors import UserError
from altgrad_triton.experiments import horizon


def test_curriculum_grows_only_below_threshold_after_a_window():
    c = horizon.Curriculum(task="copy", threshold=0.15, window=10)
    assert not c.observe(5, 0.0, 4)  # error 0 but only 5 of 10 window steps seen
    assert c.observe(5, 0.0, 4)  # window full, error 0 < 0.15
    assert (c.n, c.r, c.solved) == (2, 1, 1)
    assert not c.observe(10, 4.0, 4)  # 1 bit per output: stays
    assert c.observe(10, 0.4, 4)  # the bad segment left the 10-step window: 0.1 bits
    assert c.n == 3 and c.solved == 2


def test_curriculum_window_forgets_old_errors():
    c = horizon.Curriculum(threshold=0.5, window=4)
    for _ in range(3):
        assert not c.observe(2, 10.0, 2)  # bad
    assert not c.observe(2, 0.0, 2)  # window: last bad + this good -> 2.5 bits
    assert c.observe(2, 0.0, 2)  # window holds only good segments now
    assert c.n == 2


def test_repeat_copy_curriculum_alternates_r_and_n():
    c = horizon.Curriculum(task="repeat-copy", threshold=1.0, window=1)
    seen = []
    for _ in range(4):
        assert c.observe(1, 0.0, 1)
        seen.append((c.n, c.r))
    assert seen == [(2, 1), (2, 2), (3, 2), (3, 3)]
    assert c.solved == 6  # N*R of the last level passed: 3*2


def test_stream_shapes_and_continuity():
    gen = torch.Generator().manual_seed(0)
    s = horizon.CopyStream(3, gen, n=2, r=1)
    chunks = [s.next(4) for _ in range(5)]
    for inputs, targets, mask in chunks:
        assert inputs.shape == targets.shape == mask.shape == (4, 3)
        assert inputs.dtype == torch.long and mask.dtype == torch.bool
    inputs = torch.cat([c[0] for c in chunks])
    targets = torch.cat([c[1] for c in chunks])
    length = copy_task_length(2, 1)  # 6 steps per episode
    for e in range(20 // length):
        ep = slice(e * length, (e + 1) * length)
        assert inputs[ep][2].eq(CopyToken.STOP).all()
        assert torch.equal(targets[ep][4:6], inputs[ep][0:2])  # the recall is the pattern


def test_stream_changes_level_for_new_episodes():
    s = horizon.CopyStream(2, torch.Generator().manual_seed(0))
    s.next(3)  # one N=1 episode (5 steps) in the buffer, 2 left
    s.n = 3
    inputs, _, _ = s.next(2 + copy_task_length(3, 1))
    assert inputs[2 + 3].eq(CopyToken.STOP).all()  # the next episode has N=3


@pytest.mark.parametrize("method", ["bptt", "sg"])
def test_tiny_run(method):
    cfg = horizon.HorizonConfig(
        method=method,
        truncation=3,
        budget=60,
        hidden=8,
        batch_size=4,
        window=12,
        synthesizer="mlp",
        synth_hidden=8,
    )
    row = horizon.run(cfg)
    assert row["steps"] == 60 and row["segments"] == 20
    assert row["method"] == method
    # solved is the N*R of the last level passed (0 before any); on copy each pass is N+1
    passed = row["history"]
    assert row["levels_passed"] == len(passed)
    assert row["solved"] == (passed[-1][1] * passed[-1][2] if passed else 0)
    assert (row["n"], row["r"]) == (row["solved"] + 1, 1)
    assert (row["sg_cos"] is None) == (method == "bptt")
    json.dumps(row)


def test_config_check():
    with pytest.raises(UserError, match="truncation"):
        horizon.HorizonConfig(truncation=0).check()
    with pytest.raises(UserError, match="method"):
        horizon.HorizonConfig(method="dni").check()
    # the recipe's own rules (config.recipe.field_problems): non-finite numbers are refused
    with pytest.raises(UserError, match="threshold: must be a finite number, got inf"):
        horizon.HorizonConfig(threshold=float("inf")).check()


def test_table():
    rows = [
        {
            "task": "copy",
            "method": m,
            "truncation": t,
            "seed": s,
            "solved": v,
            "budget": 100,
            "threshold": 0.15,
        }
        for m, t, s, v in [("bptt", 2, 0, 1), ("bptt", 2, 1, 3), ("sg", 2, 0, 5), ("bptt", 4, 0, 4)]
    ]
    text = horizon.table(rows)
    assert "| 2 | 2.0 ± 1.4 | 5 | 1 3 (n=2) | 5 (n=1) |" in text
    assert "| 4 | 4 | - |" in text
