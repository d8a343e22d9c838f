"""altgrad-train on the command line: a catalogue of user mistakes (each one line on stderr,
exit code 2), a run killed in its first save and recovered, two writers on one run folder,
output folders that cannot be written, resume and fine-tune."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from altgrad_triton import files
from altgrad_triton.cli import suite as suite_cli
from altgrad_triton.cli import train as train_cli
from altgrad_triton.config import recipe as recipes
from altgrad_triton.config.recipe import to_toml
from altgrad_triton.errors import UserError
from altgrad_triton.run import metrics as metrics_module
from tests.helpers import (
    assert_one_line_error,
    assert_user_error,
    failing_writes,
    tiny_corpus,
    tiny_recipe,
)
from tests.helpers import run_command as call

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "recipes" / "wt2-small.toml"

# altgrad-train, SIGKILLed by its own hand in the middle of epoch 1's save of the checkpoint
# argv[1] names ("best" is saved first, then "last"): after the weights of that checkpoint
# are in its temporary folder, before its trainer state.
KILLED_IN_FIRST_SAVE = r"""
import os, signal, sys, torch
from altgrad_triton.cli import train
tag, real_save = sys.argv[1], torch.save
def save(obj, f, *args, **kwargs):
    if f".{tag}.tmp" in str(getattr(f, "name", f)):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.exit(train.main(sys.argv[2:]))
"""


def train(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def epochs(run_dir):
    return [row["epoch"] for row in files.read_jsonl(run_dir / "metrics.jsonl")]


def one_line(capsys, code, expected_code=2):
    """The command's stderr, asserted to be one ``error:`` line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def kill_in_first_save(tag, recipe_file, out, name):
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_IN_FIRST_SAVE, tag, recipe_file]
        + [f"run.out_dir={out}", f"run.name={name}", "run.seed=1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return out / name


@pytest.fixture
def recipe_file(tmp_path):
    def write(text):
        p = tmp_path / "r.toml"
        p.write_text(text)
        return p

    return write


@pytest.fixture
def recipe_folder(tmp_path, corpus_dir):
    folder = tmp_path / "recipes"
    folder.mkdir()
    r = tiny_recipe(corpus_dir, tmp_path / "unused", run={"max_batches": 5, "epochs": 2})
    (folder / "tiny.toml").write_text(to_toml(r))
    return folder


# ---------------------------------------------------------------------------- mistakes


def test_dump_config_prints_the_papers_configuration():
    proc = train("recipes/wt2.toml", "--dump-config")
    assert proc.returncode == 0, proc.stderr
    for line in (
        'cell = "qrnn"',
        "hidden_size = 1550",
        "emb_size = 400",
        "layers = 4",
        "length = 200",
        "epochs = 320",
        "lr = 0.001",
        "periods = [5, 5, 10, 20, 40, 80, 160]",
    ):
        assert line in proc.stdout, line


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[optim]\nlearning_rate = 1\n", ["optim.learning_rate: unknown key"]),
        ("[run]\nepochs = 'ten'\n", ["run.epochs: must be an integer, got 'ten'"]),
        ("[model.dropout]\ninput = 2.0\n", ["model.dropout.input: must be < 1, got 2.0"]),
        ("[run]\nepochs = \n", ["TOML syntax error", "line 2"]),
    ],
)
def test_bad_recipes(recipe_file, text, fragments):
    assert_user_error(train(recipe_file(text)), *fragments)


def test_unreadable_recipe(tmp_path):
    assert_user_error(train(tmp_path / "missing.toml"), "recipe file not found")


def test_bad_override_value():
    assert_user_error(train("recipes/wt2-small.toml", "optim.lr=-3"), "optim.lr: must be > 0")


def test_missing_data_directory(tmp_path):
    assert_user_error(
        train("recipes/wt2-small.toml", "data.corpus=text", f"data.path={tmp_path / 'nope'}"),
        str(tmp_path / "nope"),
    )


def test_no_data_and_no_download_says_where_to_put_files(tmp_path):
    proc = train(
        "recipes/wt2-small.toml",
        "data.corpus=wikitext-2",  # wikitext-2-small itself ships with the package
        f"data.cache_dir={tmp_path}",
        "data.download=false",
        f"run.out_dir={tmp_path / 'runs'}",
    )
    assert_user_error(proc, str(tmp_path))


def test_an_absurd_epoch_count_is_refused(tmp_path):
    proc = train("wt2-small", "run.epochs=99999999999999999999999", "--dump-config")
    assert_user_error(proc, "run.epochs: must be <= 1000000")


def test_an_empty_run_name_is_one_line_from_the_command(tmp_path):
    proc = train(SMALL, "run.name=", f"run.out_dir={tmp_path}")
    assert_user_error(proc, "run.name: must be one non-empty folder name", "got ''")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- run folders


def test_an_output_folder_that_cannot_be_written_is_one_line_before_the_data_loads(
    tmp_path, capsys
):
    a_file = tmp_path / "file"
    a_file.write_text("")
    missing = tmp_path / "no-data"  # loading it would fail: the output check comes first
    common = [str(ROOT / "recipes/wt2-small.toml"), "data.corpus=text", f"data.path={missing}"]
    line = one_line(capsys, train_cli.main([*common, f"run.out_dir={a_file}"]))
    assert line.startswith(f"error: run.out_dir: cannot write the run folder {a_file}/wt2-small")
    line = one_line(capsys, train_cli.main([*common, "run.out_dir=/sys/altgrad-runs"]))
    assert line.startswith("error: run.out_dir: cannot write the run folder /sys/altgrad-runs")


def test_a_read_only_disk_before_the_first_checkpoint_says_nothing_was_kept(
    corpus_dir, tmp_path, monkeypatch, capsys
):
    failing_writes(monkeypatch, metrics_module, "append_line", errno.EROFS, when=1)
    args = [str(ROOT / "recipes/wt2-small.toml"), "data.corpus=text", f"data.path={corpus_dir}"]
    args += [f"run.out_dir={tmp_path}", "run.device=cpu", "model.hidden_size=16"]
    args += ["model.emb_size=16", "run.max_batches=3", "data.batch_size=4"]
    args += ["data.eval_batch_size=2", "data.test_batch_size=2"]
    line = one_line(capsys, train_cli.main(args), expected_code=1)
    assert line == (
        f"error: cannot write {tmp_path / 'wt2-small' / 'metrics.jsonl'} (Read-only file "
        "system); the run stopped before its first checkpoint, so nothing was kept; once "
        "that is fixed, the same command starts it afresh"
    )


def test_a_second_writer_on_a_running_run_folder_is_refused_naming_the_first(
    recipe_folder, tmp_path
):
    out, log = tmp_path / "out", (tmp_path / "first.log").open("w")
    args = [sys.executable, "-m", "altgrad_triton.cli.train", str(recipe_folder / "tiny.toml")]
    args += [f"run.out_dir={out}", "run.name=shared", "run.epochs=1000"]
    first = subprocess.Popen(
        [*args, "run.seed=1"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while "parameters on cpu" not in (tmp_path / "first.log").read_text():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        second = subprocess.run([*args, "run.seed=2"], capture_output=True, text=True, cwd=ROOT)
    finally:
        first.send_signal(signal.SIGINT)  # it saves and stops
        first.wait(timeout=120)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.strip() == (
        f"error: {out / 'shared'} is in use by altgrad-train pid {first.pid} on "
        f"{os.uname().nodename}: one run folder takes one writer; wait for that run to end "
        "(or stop it), or give this one another run.name=... or run.out_dir=..."
    )
    assert first.returncode == 130 and not (out / "shared" / "train.lock").exists()


# ---------------------------------------------------------------------------- resume


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_while_starting_stops_with_one_line(signum, recipe_folder, monkeypatch, capsys):
    """Before the trainer's own handlers: a SIGTERM used to end the process without a word."""
    started = []

    def train(args, recipe, run_dir, tag):  # the signal lands while the run is starting
        started.append(run_dir)
        os.kill(os.getpid(), signum)
        time.sleep(5)
        raise AssertionError("the signal did not stop the start")

    monkeypatch.setattr(train_cli, "train", train)
    monkeypatch.delenv("RANK", raising=False)
    code, _, err = call(train_cli.main, capsys, recipe_folder / "tiny.toml")
    name = signal.Signals(signum).name
    assert code == 128 + signum and err.strip().splitlines() == [
        f"stopped: interrupted by {name} outside training (while starting, or testing at the "
        f"end); nothing was saved then, and {started[0]} keeps what it had"
    ]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers put back


def test_the_command_and_the_trainer_stop_on_the_same_signals():
    """cli/train.py spells them without importing torch (run.stopping does)."""
    from altgrad_triton.run import stopping

    assert train_cli.STOP_SIGNALS == stopping.STOP_SIGNALS


def test_train_then_refuse_existing_run_then_resume(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    common = [
        "data.corpus=text",
        f"data.path={data}",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.name=cli",
        "model.hidden_size=16",
        "model.emb_size=16",
        "bptt.length=8",
        "data.batch_size=4",
        "data.eval_batch_size=2",
        "data.test_batch_size=2",
        "run.device=cpu",
    ]
    proc = train("recipes/wt2-small.toml", "run.epochs=1", *common)
    assert proc.returncode == 0, proc.stderr
    assert "test ppl" in proc.stdout
    run = tmp_path / "runs" / "cli"
    assert_user_error(
        train("recipes/wt2-small.toml", *common), "already holds a run", f"--resume {run}"
    )
    proc = train("--resume", run, "run.epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_of_missing_or_corrupt_checkpoint(tmp_path):
    assert_user_error(train("--resume", tmp_path / "nothing"), "not a run directory")
    run = tmp_path / "run"
    (run / "checkpoints" / "last").mkdir(parents=True)
    (run / "recipe.toml").write_text((ROOT / "recipes" / "wt2-small.toml").read_text())
    (run / "checkpoints" / "last" / "meta.json").write_text("{not json")
    proc = train("--resume", run, f"data.path={tiny_corpus(tmp_path / 'data')}", "data.corpus=text")
    assert_user_error(proc, "checkpoint is corrupt")


def test_a_recipe_with_resume_says_they_do_not_go_together(tmp_path):
    """Issue 32: `altgrad-train wt2-small --resume RUN` blamed run.name=wt2-small, a key the
    user never typed."""
    run = tmp_path / "A"
    run.mkdir()
    (run / "recipe.toml").write_text('[run]\nname = "A"\n')
    proc = train("wt2-small", "--resume", run)
    assert_user_error(proc, f"--resume {run} continues with the run's own recipe.toml",
                      "give no recipe (wt2-small)", "run.epochs=8")  # fmt: skip


def test_a_resume_that_renames_the_run_is_refused(trained, tmp_path):
    from altgrad_triton.cli import train as train_cli

    recipe = (trained / "recipe.toml").read_text()
    with pytest.raises(UserError, match=r"run\.name=other would rename the run 'tiny'"):
        train_cli.body(["--resume", str(trained), "run.name=other"])
    assert (trained / "recipe.toml").read_text() == recipe


def test_a_run_killed_in_its_first_save_is_restarted_afresh_and_the_suite_recovers_it(
    recipe_folder, tmp_path, capsys
):
    out = tmp_path / "out"
    run = kill_in_first_save("best", recipe_folder / "tiny.toml", out, "tiny-s1")
    assert not list(run.rglob("meta.json")) and epochs(run) == [1]  # no complete checkpoint

    code = train_cli.main(["--resume", str(run)])
    line = one_line(capsys, code)
    assert "no complete checkpoint there" in line
    assert f"start it afresh with: altgrad-train {run / 'recipe.toml'} run.out_dir={out}" in line

    assert (
        suite_cli.main([str(recipe_folder), "--seeds", "1", "--out", str(out), "--no-report"]) == 0
    )
    text = capsys.readouterr().out
    assert "1 runs: 0 done (skipped), 0 to resume, 1 to run" in text
    assert json.loads((run / "results.json").read_text())["epochs"] == 2
    assert epochs(run) == [1, 2]  # a new metrics.jsonl, not appended to the old one
    assert (run / "metrics.jsonl.old").exists()


def test_a_run_killed_in_its_first_last_save_resumes_from_best(recipe_folder, tmp_path, capsys):
    out = tmp_path / "out"
    run = kill_in_first_save("last", recipe_folder / "tiny.toml", out, "tiny-s1")
    assert (run / "checkpoints" / "best" / "meta.json").exists()
    assert not (run / "checkpoints" / "last").exists()
    assert train_cli.main(["--resume", str(run)]) == 0
    text = capsys.readouterr().out
    assert f"note: taking over {run / 'train.lock'}" in text  # the killed run's
    assert "has no complete 'last' checkpoint; resuming from 'best'" in text
    assert epochs(run) == [1, 2] and (run / "results.json").exists()


# ---------------------------------------------------------------------------- fine-tuning


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
    recipe = str(run_dir / "recipe.toml")  # run.parent in a recipe: checked before the data
    assert_one_line_error(
        call(train_cli.main, capsys, recipe, *common, f"run.parent={tmp_path / 'nowhere'}",
             "optim.name=nt-asgd", "run.name=x"),
        f"run.parent={tmp_path / 'nowhere'}: not a run directory (no checkpoints/ there)",
    )  # fmt: skip
    assert not (out_dir / "x").exists()
    code, out, err = call(
        train_cli.main, capsys, "--finetune", run_dir, *common, "optim.name=nt-asgd", "optim.lr=1"
    )
    assert code == 0, err
    assert f"fine-tuning {run_dir.resolve()}'s best checkpoint" in out
    child = recipes.load(out_dir / "tiny-finetune" / "recipe.toml")
    assert child.run.parent == str(run_dir.resolve()) and child.optim.name == "nt-asgd"
