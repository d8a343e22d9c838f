"""``RunFolder``: the one place a run's file names are spelled. The names are what run
folders on disk already hold (old runs are read and resumed by them), so they are pinned
here, and a trained run's files are found where it says."""

from __future__ import annotations

from pathlib import Path

from altgrad_triton.run import lock
from altgrad_triton.run.checkpoint import layout
from altgrad_triton.run.folder import RUN_MARKS, RUN_OWN_FILES, RunFolder
from tests.helpers import trained_tiny_run


def test_every_name_of_a_run_folder():
    run = RunFolder("runs/x")
    assert run.path == Path("runs/x") and run.name == "x"
    assert run.recipe == Path("runs/x/recipe.toml")
    assert run.metrics == Path("runs/x/metrics.jsonl")
    assert run.old_metrics == Path("runs/x/metrics.jsonl.old")
    assert run.results == Path("runs/x/results.json")
    assert run.epoch_probes == Path("runs/x/probe.jsonl")
    assert run.probe("train") == Path("runs/x/probe-train.json")
    assert run.lock == Path("runs/x/train.lock") == Path("runs/x") / lock.LOCK_FILE
    assert run.tensorboard == Path("runs/x/tensorboard")
    assert run.checkpoints == Path("runs/x/checkpoints")
    assert run.checkpoint("best") == Path("runs/x/checkpoints/best")
    assert run.checkpoint("last") == layout.directory("runs/x", "last")


def test_the_folder_checks_use_its_names():
    """What marks a folder as a run's, and what a run writes there, are its names."""
    assert RUN_MARKS == (RunFolder.METRICS, RunFolder.RESULTS, lock.LOCK_FILE)
    assert RUN_OWN_FILES == (RunFolder.RECIPE, RunFolder.METRICS, RunFolder.RESULTS)


def test_a_trained_run_keeps_its_files_where_the_folder_says(tmp_path):
    run = RunFolder(trained_tiny_run(tmp_path))
    for path in (run.recipe, run.metrics, run.results):
        assert path.is_file(), path
    for tag in layout.TAGS:
        assert layout.find(run.checkpoint(tag)) == run.checkpoint(tag)
    assert not run.lock.exists()  # released when the run ended
    assert {p.name for p in run.path.iterdir()} == {
        RunFolder.RECIPE,
        RunFolder.METRICS,
        RunFolder.RESULTS,
        run.checkpoints.name,
    }
