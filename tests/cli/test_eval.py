"""altgrad-eval on a tiny trained run: its table and JSON equal the trainer's numbers, a text's
unknown words, the pointer cache, a run holding only 'last', and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from altgrad_triton.cli import eval as eval_cli
from altgrad_triton.cli import generate as generate_cli
from altgrad_triton.cli import probe as probe_cli
from altgrad_triton.run.train import Trainer
from tests.helpers import (
    assert_machine_fault,
    assert_one_line_error,
    command,
    interrupt_at,
    tiny_corpus,
    tiny_recipe,
)
from tests.helpers import run_command as call


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped inside its first epoch (Ctrl-C after its third segment): only 'last'."""
    root = tmp_path_factory.mktemp("stopped")
    recipe = tiny_recipe(tiny_corpus(root / "data"), root / "runs")
    stopped = interrupt_at(Trainer(recipe, root / "runs" / "tiny"), epoch=1, segment=2)
    assert "interrupted at epoch 1, segment 3;" in str(stopped)
    return root / "runs" / "tiny"


def test_eval_prints_a_table_and_json_equal_to_the_trainers_numbers(run_dir, capsys):
    results = json.loads((run_dir / "results.json").read_text())
    code, out, _ = call(eval_cli.main, capsys, run_dir)
    assert code == 0 and "perplexity" in out and "1 / 8" in out  # test split at batch 1
    code, out, _ = call(eval_cli.main, capsys, run_dir, "--split", "valid", "--json")
    report = json.loads(out)
    assert code == 0 and report["batch_size"] == 2  # the run's data.eval_batch_size
    assert report["loss"] == results["best_val_loss"] and report["pointer"] is None
    code, out, _ = call(eval_cli.main, capsys, run_dir, "--batch-size", "2", "--json")
    assert json.loads(out)["loss"] == results["test_loss"]


def test_eval_of_a_text_names_its_unknown_words_once(run_dir, tmp_path, capsys):
    text = tmp_path / "mine.txt"
    text.write_text("the zebra sat on a zebra mat\nquux ran\n")
    code, out, err = call(eval_cli.main, capsys, run_dir, "--text", text, "--json")
    assert code == 0 and json.loads(out)["unknown_tokens"] == 3
    assert err.count("note:") == 1 and "'zebra' x2" in err and "'quux' x1" in err


def test_eval_with_the_pointer_cache(run_dir, capsys):
    args = (run_dir, "--split", "valid", "--json")
    code, out, _ = call(eval_cli.main, capsys, *args, "--pointer")
    assert code == 0 and json.loads(out)["pointer"] == {
        "window": 3785,
        "theta": 0.662,
        "lam": 0.1279,
    }
    code, out, _ = call(eval_cli.main, capsys, *args, "--window", "100", "--lambda", "0")
    report = json.loads(out)
    assert report["pointer"] == {"window": 100, "theta": 0.662, "lam": 0.0}
    plain = json.loads(call(eval_cli.main, capsys, *args)[1])
    assert report["loss"] == pytest.approx(plain["loss"], rel=1e-7)


def test_bad_inputs_are_one_line_each(run_dir, tmp_path, capsys):
    assert_one_line_error(call(eval_cli.main, capsys, tmp_path), "not a run directory")
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints" / "best")
    assert_one_line_error(
        call(generate_cli.main, capsys, copy), "no 'best' checkpoint; it holds only 'last'"
    )
    assert_one_line_error(
        call(generate_cli.main, capsys, run_dir, "--prompt", "zebra quux"),
        "prompt: none of its words",
    )
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(
        call(eval_cli.main, capsys, run_dir, "--text", tmp_path / "empty.txt"), "is empty"
    )
    assert_one_line_error(
        call(eval_cli.main, capsys, run_dir, "--text", tmp_path / "none.txt"), "does not exist"
    )
    assert_one_line_error(
        call(eval_cli.main, capsys, run_dir, "--batch-size", 0), "batch size: must be >= 1"
    )
    assert_one_line_error(
        call(eval_cli.main, capsys, run_dir, "--lambda", 1), "pointer lambda: must be"
    )
    assert_one_line_error(
        call(eval_cli.main, capsys, run_dir, "--split", "train"), "--split: invalid choice"
    )
    assert_one_line_error(
        call(generate_cli.main, capsys, run_dir, "--temperature", 0), "temperature"
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_eval_json_to_a_full_disk_is_one_line_exit_1(trained):
    with open("/dev/full", "w") as full:
        proc = command("eval", str(trained), "--json", stdout=full)
    assert_machine_fault(proc, "No space left on device")


def test_a_run_with_only_last_says_how_to_read_it(stopped_run, capsys):
    """Issue 32: eval, generate and probe refused it ("no 'best' checkpoint; it holds only
    'last'") without saying that --checkpoint last reads it."""
    says = f"{stopped_run}: no 'best' checkpoint; it holds only 'last' (use --checkpoint last)"
    for main in (eval_cli.main, generate_cli.main, probe_cli.main):
        code, _, err = call(main, capsys, stopped_run)
        assert code == 2 and err.strip() == f"error: {says}", err


def test_eval_and_probe_say_where_inside_an_epoch_last_was_saved(stopped_run, tmp_path, capsys):
    """Issue 32: such a checkpoint showed as ``last (epoch ?)``; the probe named no epoch.
    The probe also shows its progress now (it was silent until its table)."""
    code, out, err = call(eval_cli.main, capsys, stopped_run, "--checkpoint", "last")
    assert code == 0 and "last (inside epoch 1, segment 3)" in out, err
    code, out, _ = call(eval_cli.main, capsys, stopped_run, "--checkpoint", "last", "--json")
    report = json.loads(out)
    assert report["epoch"] is None and report["stopped_inside"] == {"epoch": 1, "segment": 3}
    args = ("--checkpoint", "last", "--boundaries", "1,3", "--max-horizon", "2")
    code, out, err = call(probe_cli.main, capsys, stopped_run, *args, "--out", tmp_path / "p")
    title = " ".join(out.split())  # the table's title wraps at the table's width
    assert code == 0 and "(last, inside epoch 1, segment 3)" in title, err
    assert "probing the train split 3/3 eta" in out
