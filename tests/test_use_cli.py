"""altgrad-eval, altgrad-generate and altgrad-train --finetune on a tiny trained run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import altgrad_triton
from altgrad_triton.cli import eval as eval_cli
from altgrad_triton.cli import generate as generate_cli
from altgrad_triton.cli import probe as probe_cli
from altgrad_triton.cli import train as train_cli
from altgrad_triton.config import recipe as recipes
from altgrad_triton.errors import UserError
from altgrad_triton.run.train import Trainer
from tests.helpers import interrupt_at, tiny_corpus, tiny_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("use")
    recipe = tiny_recipe(tiny_corpus(root / "data"), root / "runs")
    Trainer(recipe, root / "runs" / "tiny").fit()
    return root / "runs" / "tiny"


def call(main, capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(result, *fragments):
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


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


def test_generate_streams_the_same_text_for_the_same_seed(run_dir, capsys):
    first = call(generate_cli.main, capsys, run_dir, "--words", 30, "--seed", 3)
    again = call(generate_cli.main, capsys, run_dir, "--words", 30, "--seed", 3)
    other = call(generate_cli.main, capsys, run_dir, "--words", 30, "--seed", 4)
    assert first[0] == 0 and first[1] == again[1] != other[1]
    words = first[1].split()
    assert 0 < len(words) <= 30 and "<eos>" not in words  # <eos> became line breaks
    code, out, err = call(generate_cli.main, capsys, run_dir, "--prompt", "the zebra", "--words", 5)
    assert code == 0 and out.startswith("the zebra ")
    assert err.strip() == "note: prompt tokens not in the vocabulary, fed as <unk>: 'zebra'"


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


def test_finetune_makes_a_new_run_that_records_its_parent(run_dir, tmp_path, capsys):
    out_dir = tmp_path / "ft"
    common = [f"run.out_dir={out_dir}", "run.epochs=1", "run.device=cpu"]
    assert_one_line_error(  # the parent trained with Adam: fine-tuning is averaged SGD
        call(train_cli.main, capsys, "--finetune", run_dir, *common),
        "optim.name: fine-tuning (run.parent) is averaged SGD",
    )
    assert_one_line_error(
        call(train_cli.main, capsys, "--finetune", tmp_path / "nowhere"), "not a run directory"
    )
    code, out, err = call(
        train_cli.main, capsys, "--finetune", run_dir, *common, "optim.name=nt-asgd", "optim.lr=1"
    )
    assert code == 0, err
    assert f"fine-tuning {run_dir.resolve()}'s best checkpoint" in out
    child = recipes.load(out_dir / "tiny-finetune" / "recipe.toml")
    assert child.run.parent == str(run_dir.resolve()) and child.optim.name == "nt-asgd"


def test_checkpoints_swapped_in_from_another_run_are_one_line_from_every_reader(
    run_dir, tmp_path, capsys
):
    """Issue 32: run K's folder with run L's (wider) checkpoints copied in. A resume refuses
    it naming the key; eval, generate, probe, load_run and a fine-tuning used L's model
    while K's recipe.toml described another. Now each refuses by the resume's rule."""
    wider = tiny_recipe(
        run_dir.parent.parent / "data",
        tmp_path / "runs",
        run={"name": "wide", "epochs": 1, "max_batches": 4, "max_eval_batches": 2},
        model={"hidden_size": 24},
    )
    Trainer(wider, tmp_path / "runs" / "wide").fit()
    k = tmp_path / "k"
    shutil.copytree(run_dir, k)
    shutil.rmtree(k / "checkpoints")
    shutil.copytree(tmp_path / "runs" / "wide" / "checkpoints", k / "checkpoints")
    (tmp_path / "f.txt").write_text("the cat sat on a mat\n")
    says = (
        f"{k / 'checkpoints' / 'best'}: not this run's checkpoint: its model differs from "
        f"{k / 'recipe.toml'}'s: model.hidden_size: checkpoint 24 vs recipe 16"
    )
    assert_one_line_error(call(eval_cli.main, capsys, k, "--text", tmp_path / "f.txt"), says)
    assert_one_line_error(call(eval_cli.main, capsys, k, "--json"), says)
    assert_one_line_error(call(generate_cli.main, capsys, k, "--words", 3), says)
    assert_one_line_error(call(probe_cli.main, capsys, k), says)
    last = says.replace("best", "last")
    assert_one_line_error(call(generate_cli.main, capsys, k, "--checkpoint", "last"), last)
    with pytest.raises(UserError) as e:
        altgrad_triton.load_run(k)
    assert str(e.value).startswith(says) and str(e.value).endswith(
        "put the run's own checkpoints back, or use the run folder these came from"
    )
    ft = [f"run.out_dir={tmp_path / 'ft'}", "optim.name=nt-asgd", "run.device=cpu"]
    assert_one_line_error(call(train_cli.main, capsys, "--finetune", k, *ft), says)
    code, _, err = call(train_cli.main, capsys, "--resume", k, "run.epochs=3")
    assert code == 2 and "model.hidden_size: checkpoint 24 vs recipe 16" in err


@pytest.mark.parametrize(
    "value, says",
    [
        (float("nan"), "the 'best' checkpoint's weights hold NaN or inf (decoder.bias)"),
        (3e38, "the model's next-token probabilities hold NaN or inf after 0 tokens"),
    ],
    ids=["nan-weights", "overflow"],
)
def test_generating_from_a_model_without_probabilities_is_one_line(
    run_dir, tmp_path, capsys, value, says
):
    """Issue 32: NaN weights (a diverged run) gave torch.multinomial's traceback."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    path = copy / "checkpoints" / "best" / "model.safetensors"
    weights = load_file(path)
    weights["decoder.bias"].fill_(value)  # finite 3e38 overflows once divided by 0.5
    save_file(weights, path)
    args = ("--words", 3, "--temperature", 0.5, "--device", "cpu")
    assert_one_line_error(call(generate_cli.main, capsys, copy, *args), f"{copy}: {says}")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped inside its first epoch (Ctrl-C after its third segment): only 'last'."""
    root = tmp_path_factory.mktemp("stopped")
    recipe = tiny_recipe(tiny_corpus(root / "data"), root / "runs")
    stopped = interrupt_at(Trainer(recipe, root / "runs" / "tiny"), epoch=1, segment=2)
    assert "interrupted at epoch 1, segment 3;" in str(stopped)
    return root / "runs" / "tiny"


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


def test_generate_refuses_more_words_than_any_use(run_dir, capsys):
    """Issue 32: ``--words 1000000000000`` was accepted."""
    for words in (10**12, 1_000_001, -1):
        assert_one_line_error(
            call(generate_cli.main, capsys, run_dir, "--words", words),
            f"--words: must be from 0 to 1,000,000, got {words}",
        )


def test_the_commands_are_installed_scripts():
    proc = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.eval", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0 and "--pointer" in proc.stdout
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'altgrad-eval = "altgrad_triton.cli.eval:main"' in scripts
    assert 'altgrad-generate = "altgrad_triton.cli.generate:main"' in scripts
