"""The run folder (``run/folder.py``): the names of its files, what a run continues from, a
fresh start's clean slate, no run folder inside another run or a checkpoint, and the
one-line messages for folders that cannot be written."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from altgrad_triton.cli import train as train_cli
from altgrad_triton.errors import UserError
from altgrad_triton.run import folder as rundir
from altgrad_triton.run import lock
from altgrad_triton.run.checkpoint import layout
from altgrad_triton.run.folder import RUN_MARKS, RUN_OWN_FILES, RunFolder
from tests.helpers import (
    one_error_line,
    run_command,
    trained_tiny_run,
    tree_snapshot,
)


def complete(run_dir, tag, epoch=2):
    """A checkpoint folder as a finished save leaves it (meta.json is what marks it)."""
    path = run_dir / "checkpoints" / tag
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"epoch": epoch, "model_shape": {}}))
    return path


def finished_run(folder: Path) -> None:
    """A finished run's files, as altgrad-train leaves them."""
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "checkpoints" / "best" / "meta.json").write_text('{"epoch": 2}')
    (folder / "recipe.toml").write_text('[run]\nname = "checkpoints"\n')
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 5.0}\n')
    (folder / "results.json").write_text('{"best_val_loss": 5.0}')


# ---------------------------------------------------------------------------- names


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


# ---------------------------------------------------------------------------- continuing


def test_what_a_run_continues_from(tmp_path):
    run = tmp_path / "run"
    assert rundir.status(run) == "run" and rundir.resume_tag(run) is None
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)  # a first save cut off
    assert rundir.status(run) == "run"
    best = complete(run, "best")  # the first 'last' save cut off
    assert rundir.resume_tag(run) == "best" and rundir.status(run) == "resume"
    best.rename(run / "checkpoints" / ".best.old")  # cut off between the renames
    assert rundir.resume_tag(run) == "best"
    complete(run, "last", epoch=3)
    assert rundir.resume_tag(run) == "last"
    assert rundir.kept(run) == (
        f"{run / 'checkpoints' / 'last'} (resumes at epoch 3) and .best.old (after epoch 1)"
    )
    (run / "results.json").write_text("{}")
    assert rundir.status(run) == "done"


def test_resume_without_a_complete_checkpoint_says_how_to_start_afresh(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)
    with pytest.raises(UserError) as e, rundir.claim(run, resuming=True):
        pass
    assert str(e.value) == (
        f"--resume {run}: no complete checkpoint there (the run stopped before its first one "
        "was saved), so nothing to continue; start it afresh with: altgrad-train "
        f"{run / 'recipe.toml'} run.out_dir={run.parent} run.name=x"
    )
    complete(run, "best")
    with rundir.claim(run, resuming=True) as tag:
        assert tag == "best"
    assert "no complete 'last' checkpoint; resuming from 'best'" in capsys.readouterr().out


# ---------------------------------------------------------------------------- a fresh start


def test_a_run_folder_made_for_a_run_that_never_began_is_removed(tmp_path):
    run = tmp_path / "out" / "run"
    with pytest.raises(UserError), rundir.claim(run, resuming=False):
        raise UserError("the data folder does not exist")
    assert not run.exists() and (tmp_path / "out").exists()


def test_a_fresh_start_takes_over_a_folder_without_a_complete_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)
    (run / "recipe.toml").write_text("")  # what marks it as a run's own folder
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with rundir.claim(run, resuming=False) as tag:
        assert tag is None
        assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    assert (run / "metrics.jsonl.old").read_text() == '{"epoch": 1}\n'
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "starting it afresh with a new metrics.jsonl" in out[0]


def test_a_fresh_start_refuses_a_folder_that_holds_a_run(tmp_path):
    run = tmp_path / "run"
    complete(run, "last")
    with pytest.raises(UserError, match=f"already holds a run: continue it with --resume {run}"):
        rundir.start_afresh(run)
    (run / "checkpoints").rename(tmp_path / "elsewhere")  # finished, checkpoints deleted
    (run / "results.json").write_text("{}")
    with pytest.raises(UserError, match=r"holds a finished run \(results.json\)"):
        rundir.start_afresh(run)


def test_a_fresh_start_never_removes_a_sibling_run_named_checkpoints(tmp_path):
    out = tmp_path / "runs"
    finished_run(out / "checkpoints")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with rundir.claim(out, resuming=False):  # what an empty run.name made of run.out_dir
        pass
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_fresh_start_removes_only_the_checkpoints_its_run_left(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)
    (run / "recipe.toml").write_text('[run]\nname = "run"\n')
    (run / "checkpoints" / "last").mkdir()
    (run / "checkpoints" / "notes").mkdir()
    with rundir.claim(run, resuming=False):
        pass
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["notes"]


def test_a_fresh_start_refuses_checkpoint_folders_it_did_not_write(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)  # a first save cut off
    (run / "checkpoints" / ".best.tmp" / "data.csv").write_text("mine")
    (run / "recipe.toml").write_text("")
    refused = pytest.raises(UserError, match=r"\.best\.tmp: not only a checkpoint")
    with refused, rundir.claim(run, resuming=False):
        pass
    assert (run / "checkpoints" / ".best.tmp" / "data.csv").read_text() == "mine"


# ---------------------------------------------------------------------------- nesting


def test_a_run_inside_another_runs_checkpoint_folder_is_refused_and_nothing_is_written(
    run_a, capsys
):
    a, recipe = run_a
    before = tree_snapshot(a)
    inside = a / "checkpoints"
    code, _, err = run_command(
        train_cli.main, capsys, recipe, f"run.out_dir={inside}", "run.name=best"
    )
    line = one_error_line(code, err)
    assert line.startswith(f"error: run.out_dir={inside}: inside the run folder {a.resolve()}")
    assert f"run.out_dir outside every run folder and checkpoint, e.g. {a.parent.resolve()}" in line
    assert tree_snapshot(a) == before
    # the next step: A resumed, its new best saved, over nothing but its own files
    code, _, err = run_command(train_cli.main, capsys, "--resume", a, "run.epochs=2")
    assert code == 0, err
    assert set(tree_snapshot(a)) == set(before)


@pytest.mark.parametrize(
    "out, name, key",
    [
        ("A", "sub", "run.out_dir"),  # in the run folder itself
        ("A/checkpoints/best", "sub", "run.out_dir"),  # in a checkpoint
        ("A/checkpoints/best/deeper", "sub", "run.out_dir"),
        ("copied", "best", "run.name"),  # the run folder would be a (copied) checkpoint
    ],
)
def test_a_fresh_run_folder_inside_a_run_or_a_checkpoint_is_one_line(tmp_path, out, name, key):
    a = tmp_path / "A"
    (a / "checkpoints" / "best").mkdir(parents=True)
    (a / "checkpoints" / "best" / layout.META).write_text("{}")
    (a / "recipe.toml").write_text("")
    (a / "metrics.jsonl").write_text("")
    (tmp_path / "copied" / "best").mkdir(parents=True)
    (tmp_path / "copied" / "best" / layout.MODEL).write_text("")
    (tmp_path / "copied" / "best" / layout.META).write_text("{}")
    before = tree_snapshot(tmp_path)
    run = tmp_path / out / name
    with pytest.raises(UserError) as e, rundir.claim(run, resuming=False):
        pass
    message = str(e.value)
    assert "\n" not in message and message.startswith(key + "=")
    value = str(run.parent) if key == "run.out_dir" else name
    assert message.startswith(f"{key}={value}: ")
    assert tree_snapshot(tmp_path) == before  # not even the run folder was made


def test_a_folder_that_merely_holds_a_recipe_or_a_model_may_hold_runs(tmp_path):
    """A project folder with its own recipe.toml, or a downloaded model.safetensors, or
    a checkpoints/ folder of another tool, is no run folder: runs/ below it is fine."""
    (tmp_path / "recipe.toml").write_text("")
    (tmp_path / layout.MODEL).write_text("")
    (tmp_path / "checkpoints" / "step-100").mkdir(parents=True)
    with rundir.claim(tmp_path / "runs" / "x", resuming=False) as tag:
        assert tag is None


# ---------------------------------------------------------------------------- unwritable folders


def test_folders_that_cannot_be_written_are_one_line_before_anything_loads(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(UserError) as e, rundir.claim(a_file / "run", resuming=False):
        pass
    assert str(e.value).startswith(f"run.out_dir: cannot write the run folder {a_file / 'run'}")
    assert "a file stands where a folder is needed" in str(e.value)
    sys_error = pytest.raises(UserError, match="run.out_dir: cannot write the run folder /sys/")
    with sys_error, rundir.claim("/sys/altgrad-run", resuming=False):
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path):
    out = tmp_path / "ro"
    out.mkdir(mode=0o555)
    denied = pytest.raises(UserError, match=r"cannot write the run folder .*Permission denied")
    with denied, rundir.claim(out / "run", resuming=False):
        pass


def test_a_failed_write_says_what_was_kept(tmp_path):
    run = tmp_path / "run"
    full = OSError(errno.ENOSPC, "No space left on device", str(run / "metrics.jsonl"))
    e = rundir.write_failure(full, run, "altgrad-train")
    assert e.exit_code == 1 and str(e) == (
        f"cannot write {run / 'metrics.jsonl'} (No space left on device); the run stopped "
        "before its first checkpoint, so nothing was kept; once that is fixed, the same "
        "command starts it afresh"
    )
    complete(run, "last", epoch=4)
    assert str(rundir.write_failure(full, run, "altgrad-train")).endswith(
        f"kept {run / 'checkpoints' / 'last'} (resumes at epoch 4) intact; once that is "
        f"fixed, continue with: altgrad-train --resume {run}"
    )


@pytest.mark.parametrize("name", ["metrics.jsonl", "results.json", "recipe.toml"])
@pytest.mark.parametrize("resuming", [True, False], ids=["resume", "fresh"])
def test_a_folder_where_the_run_writes_a_file_is_one_line_before_training(tmp_path, name, resuming):
    """Issue 32: a metrics.jsonl that is a folder failed at the end of the first epoch (a
    whole epoch wasted), exit 1 as if the disk had failed."""
    run = tmp_path / "run"
    complete(run, "last")
    (run / name / "kept").mkdir(parents=True)
    if not resuming:
        (run / "checkpoints").rename(tmp_path / "elsewhere")
    with pytest.raises(UserError) as e, rundir.claim(run, resuming=resuming):
        pass
    assert e.value.exit_code == 2 and str(e.value) == (
        f"{run / name}: a folder stands where the run writes its file {name}; move it "
        "away, then run again"
    )
    assert (run / name / "kept").is_dir()


@pytest.mark.parametrize(
    ("error", "code"),
    [(errno.ENOSPC, 1), (errno.EACCES, 2)],
    ids=["full disk", "forbidden folder"],
)
def test_a_full_disk_at_start_exits_1_a_forbidden_folder_2(tmp_path, monkeypatch, error, code):
    """Issue 32: a full disk (the lock cannot be written) exited 2, as a user's mistake."""
    from altgrad_triton.run import lock as runlock

    def fails(run_dir):
        raise OSError(error, os.strerror(error), str(run_dir / "train.lock"))

    monkeypatch.setattr(runlock, "acquire", fails)
    with (
        pytest.raises(UserError, match=os.strerror(error)) as e,
        rundir.claim(tmp_path / "run", resuming=False),
    ):
        pass
    assert e.value.exit_code == code


# ---------------------------------------------------------------------------- outputs


def test_an_output_inside_the_checkpoints_is_refused_and_beside_them_is_not(tmp_path):
    run = tmp_path / "run"
    finished_run(run)
    (run / "checkpoints" / "best" / "model.safetensors").write_bytes(b"")
    for place, folder in (
        (run / "checkpoints", True),
        (run / "checkpoints" / "best" / "p.json", False),
    ):
        with pytest.raises(UserError, match="which altgrad-train manages"):
            rundir.check_output(place, "--out", folder=folder)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rundir.check_output(run / "report", "--out", folder=True)  # beside them: fine
    rundir.check_output(tmp_path / "new" / "deeper" / "t.json", "--out", folder=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created


def test_an_output_that_cannot_be_written_fails_before_the_work(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        rundir.check_output(tmp_path / "f" / "out", "--out", folder=True)
    with pytest.raises(IsADirectoryError):
        rundir.check_output(tmp_path, "--markdown", folder=False)

    def read_only(**kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs["dir"] / ".x")

    monkeypatch.setattr(rundir.tempfile, "mkdtemp", read_only)
    with pytest.raises(OSError) as e:
        rundir.check_output(tmp_path / "o", "--out", folder=True)
    assert e.value.errno == errno.EROFS and e.value.filename == str(tmp_path / "o")
    assert e.value.strerror == f"cannot write in {tmp_path} (Read-only file system)"
