"""What can go wrong with a run, as a user meets it (docs/troubleshooting.md): a run
killed while its first checkpoint is written, two writers on one run folder, output folders
that cannot be written and disks that fill up, checkpoint files that do not fit the model,
Ctrl-C during the last validation, a resume that would cut an epoch differently. Real
processes where the fault is a process's (a SIGKILL, a second writer)."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from altgrad_triton import files
from altgrad_triton.cli import suite as suite_cli
from altgrad_triton.cli import train as train_cli
from altgrad_triton.config.recipe import to_toml
from altgrad_triton.errors import UserError
from altgrad_triton.run import metrics as metrics_module
from altgrad_triton.run.checkpoint import store
from altgrad_triton.run.train import Trainer, TrainingStopped
from tests.helpers import interrupt_at, tiny_corpus, tiny_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def corpus_dir(tmp_path):
    return tiny_corpus(tmp_path / "data", n_train=120)


def epochs(run_dir):
    return [row["epoch"] for row in files.read_jsonl(run_dir / "metrics.jsonl")]


def one_line(capsys, code, expected_code=2):
    """The command's stderr, asserted to be one ``error:`` line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---------------------------------------------------------------------------- case 1

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
def recipe_folder(tmp_path, corpus_dir):
    folder = tmp_path / "recipes"
    folder.mkdir()
    r = tiny_recipe(corpus_dir, tmp_path / "unused", run={"max_batches": 5, "epochs": 2})
    (folder / "tiny.toml").write_text(to_toml(r))
    return folder


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


def test_resuming_from_best_when_last_is_missing_continues_exactly(corpus_dir, tmp_path):
    straight = tiny_recipe(corpus_dir, tmp_path / "a", run={"max_batches": 10})
    Trainer(straight, tmp_path / "a" / "tiny").fit()
    first = Trainer(
        tiny_recipe(corpus_dir, tmp_path / "b", run={"max_batches": 10}), tmp_path / "b" / "tiny"
    )
    first.run_epoch(first.parts.plan(1))
    shutil.rmtree(tmp_path / "b" / "tiny" / "checkpoints" / "last")  # the save that was cut off
    more = tiny_recipe(corpus_dir, tmp_path / "b", run={"max_batches": 10})
    again = Trainer(more, tmp_path / "b" / "tiny")
    again.restore("best")
    again.fit()
    a = files.read_jsonl(tmp_path / "a" / "tiny" / "metrics.jsonl")
    b = files.read_jsonl(tmp_path / "b" / "tiny" / "metrics.jsonl")
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


# ---------------------------------------------------------------------------- case 2


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


# ---------------------------------------------------------------------------- case 4


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


def failing_writes(monkeypatch, module, name, cause, when):
    """Make ``module.name`` (a writer) fail with ``cause`` from call ``when`` on."""
    real, calls = getattr(module, name), []

    def writer(path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= when:
            raise OSError(cause, os.strerror(cause), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, writer)


def test_a_full_disk_during_a_save_keeps_the_checkpoints_and_says_so(
    corpus_dir, tmp_path, monkeypatch
):
    r = tiny_recipe(corpus_dir, tmp_path, run={"max_batches": 5, "epochs": 3})
    run = tmp_path / "tiny"
    trainer = Trainer(r, run)
    trainer.run_epoch(trainer.parts.plan(1))
    saved = (run / "checkpoints" / "last" / "model.safetensors").read_bytes()
    # epoch 2's first checkpoint file onwards: the disk is full
    failing_writes(monkeypatch, store, "write_file", errno.ENOSPC, when=1)
    with pytest.raises(UserError) as e:
        trainer.fit()
    assert e.value.exit_code == 1 and "\n" not in str(e.value)
    assert str(e.value).startswith(f"cannot write {run / 'checkpoints'}/.")
    assert "(No space left on device); the run stopped and kept " in str(e.value)
    assert f"{run / 'checkpoints' / 'last'} (resumes at epoch 2) and best (after epoch 1)" in str(
        e.value
    )
    assert str(e.value).endswith(f"continue with: altgrad-train --resume {run}")
    assert (run / "checkpoints" / "last" / "model.safetensors").read_bytes() == saved
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last"]
    monkeypatch.undo()
    again = Trainer(r, run)
    again.restore("last")
    again.fit()
    assert epochs(run) == [1, 2, 3]


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


class FillsUp:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_a_disk_that_fills_up_inside_torch_save_is_an_os_error_naming_the_file(tmp_path):
    """torch.save answers a failed write in the middle of its archive with "unexpected pos",
    the OSError only its context (seen on a real full tmpfs); write_file finds it."""
    state = {"x": torch.zeros(100_000)}
    with pytest.raises(RuntimeError, match="unexpected pos"):
        torch.save(state, FillsUp(io.BytesIO(), 200_000))
    path = tmp_path / "trainer.pt"
    with pytest.raises(OSError) as e:
        files.write_file(path, lambda f: torch.save(state, FillsUp(f, 200_000)))
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(path))


# ---------------------------------------------------------------------------- case 5


@pytest.fixture
def finished(corpus_dir, tmp_path):
    """A one-epoch run of the tiny model, and its recipe."""
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"max_batches": 5, "epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    return r, tmp_path / "runs" / "tiny"


@pytest.mark.parametrize(
    "text, says",
    [
        ("[1, 2]", "meta.json: expected a JSON object with model_shape, got list"),
        ('{"epoch": 2}', "meta.json: lacks 'model_shape'"),
    ],
    ids=["not-an-object", "no-model-shape"],
)
def test_a_wrongly_shaped_meta_json_is_one_line_naming_it(finished, text, says):
    r, run = finished
    (run / "checkpoints" / "last" / "meta.json").write_text(text)
    with pytest.raises(UserError, match="checkpoint is corrupt or incomplete") as e:
        Trainer(r, run).restore("last")
    assert says in str(e.value)


def test_a_trainer_state_that_is_not_one_is_one_line_naming_it(finished):
    r, run = finished
    torch.save([1, 2], run / "checkpoints" / "last" / "trainer.pt")
    with pytest.raises(UserError, match=r"trainer.pt: holds a list, not a dict"):
        Trainer(r, run).restore("last")


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.pt"])
def test_files_from_a_model_of_another_size_are_one_line_naming_the_file_and_tensor(
    finished, corpus_dir, tmp_path, name
):
    r, run = finished
    wider = tiny_recipe(
        corpus_dir, tmp_path / "w", run={"max_batches": 5, "epochs": 1}, model={"hidden_size": 24}
    )
    Trainer(wider, tmp_path / "w" / "tiny").fit()
    shutil.copy(tmp_path / "w" / "tiny" / "checkpoints" / "last" / name, run / "checkpoints/last")
    with pytest.raises(UserError) as e:
        Trainer(r, run).restore("last")
    assert str(e.value).startswith(f"{run / 'checkpoints' / 'last' / name}: ")
    assert str(e.value).endswith("the file is from a model of another size")
    first = "'layers.0.w_ih' has shape [96, 16], this run's has [64, 16]"
    if name == "trainer.pt":
        first = "optimizer state 'exp_avg' of 'layers.0.w_ih' has shape [96, 16], the "
        first += "parameter's is [64, 16]"
    assert first in str(e.value)


# ---------------------------------------------------------------------------- case 7


def test_ctrl_c_during_the_last_validation_stops_after_saving(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path, run={"max_batches": 5})
    trainer = Trainer(r, tmp_path / "tiny")
    real_evaluate = trainer.parts.evaluate

    def ctrl_c_in_the_last_validation(*args, **kwargs):
        if trainer.run_state.epoch == 2:
            trainer.stops.request()
        return real_evaluate(*args, **kwargs)

    trainer.parts.evaluate = ctrl_c_in_the_last_validation
    with pytest.raises(TrainingStopped) as e:
        trainer.fit()
    assert e.value.exit_code == 130
    assert str(e.value) == (
        f"interrupted after epoch 2; saved. Continue with: altgrad-train --resume "
        f"{tmp_path / 'tiny'}"
    )
    assert not (tmp_path / "tiny" / "results.json").exists()  # no test of an unasked run
    again = Trainer(r, tmp_path / "tiny")
    again.restore("last")
    again.fit()  # nothing left to train: the test of the best checkpoint
    assert epochs(tmp_path / "tiny") == [1, 2] and (tmp_path / "tiny" / "results.json").exists()


@pytest.mark.parametrize(
    "change, says",
    [
        ({"run": {"seed": 7}}, "run.seed=7, but the checkpoint stopped inside epoch 1, whose "
         "segments were cut with run.seed=42; resume with run.seed=42"),
        ({"bptt": {"length": 6}}, "bptt.length=6, but the checkpoint stopped inside epoch 1, "
         "whose segments were cut with bptt.length=8; resume with bptt.length=8"),
    ],
    ids=["seed", "bptt-length"],
)  # fmt: skip
def test_a_resume_inside_an_epoch_refuses_to_cut_it_differently(corpus_dir, tmp_path, change, says):
    r = tiny_recipe(corpus_dir, tmp_path, run={"max_batches": 5})
    interrupt_at(Trainer(r, tmp_path / "tiny"), epoch=1, segment=2)
    sections = {**change, "run": {"max_batches": 5, **change.get("run", {})}}
    other = tiny_recipe(corpus_dir, tmp_path, **sections)
    with pytest.raises(UserError) as e:
        Trainer(other, tmp_path / "tiny").restore("last")
    assert str(e.value).startswith(f"cannot resume: {says}")
    at_the_boundary = tiny_recipe(corpus_dir, tmp_path / "b", run={"max_batches": 5, "epochs": 1})
    Trainer(at_the_boundary, tmp_path / "b" / "tiny").fit()
    Trainer(other, tmp_path / "b" / "tiny").restore("last")  # fine between epochs


def test_a_run_whose_loss_runs_away_is_warned_about(corpus_dir, tmp_path):
    out = io.StringIO()
    r = tiny_recipe(corpus_dir, tmp_path, run={"max_batches": 2, "epochs": 1})
    trainer = Trainer(r, tmp_path / "tiny", console=Console(file=out, width=300))
    with torch.no_grad():  # every word but one a near-certain miss: finite, enormous loss
        trainer.parts.model.decoder.bias[0] = 1e4
    trainer.fit()
    assert "warning: validation perplexity 5.18e+21" in out.getvalue()
