"""The hooks (``run/hooks.py``): the points a run calls them at, in order; a recipe key whose
hook the run was not given is refused; ``closed`` however a run ends; and NT-ASGD's
fine-tuning ending at AWD-LSTM's criterion."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from altgrad_triton.errors import UserError
from altgrad_triton.run.hooks import Hooks, NtAsgd, RunHook
from altgrad_triton.run.train import Trainer
from tests.helpers import interrupt_at, tiny_corpus, tiny_recipe


class Recording(RunHook):
    """Every point it is called at, with the epoch or segment it is called for."""

    def __init__(self, serves: str = "", stop_before: int | None = None):
        self.serves, self.stop_before, self.seen = serves, stop_before, []

    def attach(self, trainer):
        self.seen.append("attach")

    def opened(self, trainer):
        self.seen.append("opened")

    def closed(self, trainer):
        self.seen.append("closed")

    def after_segment(self, trainer, segment):
        self.seen.append(f"segment {segment.index}")

    def after_epoch(self, trainer, plan, row):
        self.seen.append(f"epoch {plan.epoch} {row['epoch']}")

    def after_best(self, trainer, val):
        self.seen.append(f"best {trainer.run_state.epoch - 1}")

    def finished(self, trainer):
        self.seen.append(f"finished? {trainer.run_state.epoch}")
        return trainer.run_state.epoch == self.stop_before

    def resumed(self, trainer):
        self.seen.append("resumed")


@pytest.fixture
def recipe(tmp_path):
    data = tiny_corpus(tmp_path / "data", n_train=120)
    return tiny_recipe(data, tmp_path / "runs", run={"epochs": 2, "max_batches": 2})


def test_a_run_calls_each_point_in_the_loops_order(recipe, tmp_path):
    hook = Recording()
    Trainer(recipe, tmp_path / "runs" / "tiny", hooks=[hook]).fit()
    epoch = ["segment 1", "segment 2"]
    assert hook.seen == [
        "attach", "opened",
        "finished? 1", *epoch, "epoch 1 1", "best 1",
        "finished? 2", *epoch, "epoch 2 2", "best 2",
        "closed",
    ]  # fmt: skip


def test_a_hook_that_says_finished_ends_the_run_before_the_next_epoch(recipe, tmp_path):
    hook = Recording(stop_before=2)
    Trainer(recipe, tmp_path / "runs" / "tiny", hooks=[hook]).fit()
    assert "epoch 2 2" not in hook.seen and hook.seen[-2:] == ["finished? 2", "closed"]


def test_closed_is_called_when_a_run_is_stopped_and_resumed_after_a_restore(recipe, tmp_path):
    hook = Recording()
    interrupt_at(Trainer(recipe, tmp_path / "runs" / "tiny", hooks=[hook]), epoch=1, segment=1)
    assert hook.seen[-1] == "closed" and "epoch 1 1" not in hook.seen
    again = Recording()
    trainer = Trainer(recipe, tmp_path / "runs" / "tiny", hooks=[again])
    trainer.restore("last")
    assert again.seen == ["attach", "resumed"]


def test_a_recipe_key_without_its_hook_is_refused_in_one_line():
    with pytest.raises(UserError) as e:
        Hooks([Recording()], {"probe.every": "the probe's hook"})
    assert str(e.value) == (
        "probe.every: needs the hook that carries it out: hooks=[the probe's hook]"
    )
    assert Hooks([Recording(serves="probe.every")], {"probe.every": "the probe's hook"}).hooks


def test_the_hooks_are_called_in_order_and_closed_however_the_block_ends():
    first, second = Recording(), Recording(stop_before=3)
    hooks = Hooks([first, second], {})
    trainer = SimpleNamespace(run_state=SimpleNamespace(epoch=3))
    with pytest.raises(RuntimeError), hooks.open(trainer):
        raise RuntimeError("a bug inside the run")
    assert first.seen == second.seen == ["opened", "closed"]
    assert hooks.finished(trainer)  # the second says so
    assert first.seen[-1] == "finished? 3" and second.seen[-1] == "finished? 3"


@pytest.mark.parametrize(
    "parent, losses, done",
    [
        (None, [3.0, 2.0, 2.5, 2.6], False),  # not a fine-tuning: it ends at its epochs
        ("runs/parent", [3.0, 2.0, 2.5], False),  # too few epochs for the criterion
        ("runs/parent", [3.0, 2.0, 2.5, 2.6], True),  # worse than the best before the last 1
        ("runs/parent", [3.0, 2.0, 2.5, 1.9], False),  # still improving
    ],
)
def test_a_fine_tuning_ends_where_awd_lstm_ends_it(parent, losses, done):
    hook = NtAsgd(switch=True, nonmono=1, parent=parent)
    trainer = SimpleNamespace(run_state=SimpleNamespace(val_losses=losses))
    assert hook.finished(trainer) is done
