"""The five plans of the paper, epoch by epoch, written out by hand."""

import math

import pytest

from altgrad_triton.config import recipe as recipes
from altgrad_triton.core.schedule import AlternationPlan, CosineWarmRestarts
from altgrad_triton.run.build import training_plan

LR = 1e-3
EPOCHS = 320


def modes_by_hand(spans):
    """[(first, last, mode), ...] -> {epoch: mode}"""
    out = {}
    for first, last, mode in spans:
        for e in range(first, last + 1):
            out[e] = mode
    assert sorted(out) == list(range(1, EPOCHS + 1))
    return out


def cosine(t, period):
    return LR / 2 * (1 + math.cos(math.pi * t / period))


RB160_STARTS = [1, 161]
RB5_STARTS = [1, 6, 11, 21, 41, 81, 161]
RB5_PERIODS = [5, 5, 10, 20, 40, 80, 160]

PLANS = {
    "dni": (
        recipes.ScheduleConfig(kind="constant"),
        recipes.AlternationConfig(start="real", switch_epochs=[2]),
        modes_by_hand([(1, 1, "real"), (2, 320, "synthetic")]),
        [],
        None,
    ),
    "dni-rb160": (
        recipes.ScheduleConfig(kind="cosine_restarts", periods=[160, 160]),
        recipes.AlternationConfig(start="real", switch_epochs=[2]),
        modes_by_hand([(1, 1, "real"), (2, 320, "synthetic")]),
        RB160_STARTS,
        [160, 160],
    ),
    "dni-rb5": (
        recipes.ScheduleConfig(kind="cosine_restarts", periods=RB5_PERIODS),
        recipes.AlternationConfig(start="real", switch_epochs=[2]),
        modes_by_hand([(1, 1, "real"), (2, 320, "synthetic")]),
        RB5_STARTS,
        RB5_PERIODS,
    ),
    "alt-rb160": (
        recipes.ScheduleConfig(kind="cosine_restarts", periods=[160, 160]),
        recipes.AlternationConfig(start="real", switch_epochs=[2], switch_at_restarts=True),
        modes_by_hand([(1, 1, "real"), (2, 160, "synthetic"), (161, 320, "real")]),
        RB160_STARTS,
        [160, 160],
    ),
    "alt-rb5": (
        recipes.ScheduleConfig(kind="cosine_restarts", periods=RB5_PERIODS),
        recipes.AlternationConfig(start="real", switch_epochs=[2], switch_at_restarts=True),
        modes_by_hand(
            [
                (1, 1, "real"),
                (2, 5, "synthetic"),
                (6, 10, "real"),
                (11, 20, "synthetic"),
                (21, 40, "real"),
                (41, 80, "synthetic"),
                (81, 160, "real"),
                (161, 320, "synthetic"),
            ]
        ),
        RB5_STARTS,
        RB5_PERIODS,
    ),
}


@pytest.mark.parametrize("name", list(PLANS))
def test_paper_plans_epoch_by_epoch(name):
    sched, alt, modes, starts, periods = PLANS[name]
    r = recipes.Recipe(
        optim=recipes.OptimConfig(lr=LR),
        schedule=sched,
        synthetic=recipes.SyntheticConfig(enabled=True, alternation=alt),
    )
    plan = training_plan(r)
    for epoch in range(1, EPOCHS + 1):
        p = plan(epoch)
        assert p.mode == modes[epoch], (name, epoch)
        assert p.restart == (epoch in starts[1:]), (name, epoch)
        if periods is None:
            assert p.lr == LR
        else:
            cycle = max(i for i, s in enumerate(starts) if s <= epoch)
            expected = cosine(epoch - starts[cycle], periods[cycle])
            assert p.lr == pytest.approx(expected, rel=1e-12, abs=1e-15), (name, epoch)


def test_restart_epochs_get_peak_lr_and_last_period_repeats():
    s = CosineWarmRestarts(1.0, (2, 3))
    assert [s.is_restart(e) for e in range(1, 10)] == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    assert s.lr(3) == 1.0 and s.lr(6) == 1.0
    assert s.lr(2) == pytest.approx(0.5)


def test_synthetic_disabled_is_always_real():
    plan = AlternationPlan("synthetic", (2, 3), True, enabled=False)
    assert all(plan.mode(e, CosineWarmRestarts(1.0, (1,))) == "real" for e in range(1, 10))


def test_lr_min_floor():
    s = CosineWarmRestarts(1.0, (4,), lr_min=0.2)
    assert s.lr(1) == 1.0
    assert s.lr(3) == pytest.approx(0.6)
