"""Launching one training process (``run/launch.py``): alone it trains, or resumes from the
checkpoint it is given, with the hooks it is handed; a rank's error names the rank."""

from __future__ import annotations

from types import SimpleNamespace

from altgrad_triton import files
from altgrad_triton.errors import UserError
from altgrad_triton.run.hooks import RunHook
from altgrad_triton.run.launch import _on_rank, launch
from tests.helpers import tiny_corpus, tiny_recipe


class Epochs(RunHook):
    def __init__(self):
        self.epochs = []

    def after_epoch(self, trainer, plan, row):
        self.epochs.append(plan.epoch)


def test_one_process_trains_then_resumes_from_the_checkpoint_it_is_given(tmp_path):
    data = tiny_corpus(tmp_path / "data", n_train=120)
    run = tmp_path / "runs" / "tiny"
    first = Epochs()
    once = tiny_recipe(data, tmp_path / "runs", run={"epochs": 1, "max_batches": 2})
    assert launch(once, run, None, None, hooks=[first]) == 0
    assert first.epochs == [1] and (run / "results.json").is_file()
    more = Epochs()
    twice = tiny_recipe(data, tmp_path / "runs", run={"epochs": 2, "max_batches": 2})
    assert launch(twice, run, "last", None, hooks=[more]) == 0
    assert more.epochs == [2]  # epoch 1 was not trained again
    assert [row["epoch"] for row in files.read_jsonl(run / "metrics.jsonl")] == [1, 2]


def test_a_ranks_error_names_the_rank_and_keeps_its_exit_code_and_label():
    stopped = UserError("interrupted", exit_code=130, label="stopped")
    error = _on_rank(stopped, SimpleNamespace(rank=1))
    assert (str(error), error.exit_code, error.label) == ("rank 1: interrupted", 130, "stopped")
    plain = _on_rank(UserError("data.path: no such folder"), SimpleNamespace(rank=0))
    assert (str(plain), plain.exit_code) == ("rank 0: data.path: no such folder", 2)
    assert plain.label == "error"
