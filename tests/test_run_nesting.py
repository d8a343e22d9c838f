"""Issue 32: no run folder inside another run's folder or inside a checkpoint, and no
checkpoint save that removes a folder it did not write (a run made inside another run's
``checkpoints/best`` was deleted by that run's next save, silently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from altgrad_triton.cli import train as train_cli
from altgrad_triton.config.recipe import to_toml
from altgrad_triton.errors import UserError
from altgrad_triton.run import folder as rundir
from altgrad_triton.run.checkpoint import layout
from altgrad_triton.run.train import Trainer
from tests.helpers import run_command, tiny_corpus, tiny_recipe

TINY = {"max_batches": 4, "max_eval_batches": 2, "epochs": 1, "threads": 1}


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` and the bytes of its files."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def run_a(tmp_path):
    """A finished one-epoch run ``A`` (checkpoints best and last) and its recipe file."""
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "x", run={**TINY, "name": "A"})
    (tmp_path / "tiny.toml").write_text(to_toml(r))
    Trainer(r, tmp_path / "x" / "A").fit()
    return tmp_path / "x" / "A", tmp_path / "tiny.toml"


def test_a_run_inside_another_runs_checkpoint_folder_is_refused_and_nothing_is_written(
    run_a, capsys
):
    a, recipe = run_a
    before = snapshot(a)
    inside = a / "checkpoints"
    code, _, err = run_command(
        train_cli.main, capsys, recipe, f"run.out_dir={inside}", "run.name=best"
    )
    line = one_line(code, err)
    assert line.startswith(f"error: run.out_dir={inside}: inside the run folder {a.resolve()}")
    assert f"run.out_dir outside every run folder and checkpoint, e.g. {a.parent.resolve()}" in line
    assert snapshot(a) == before
    # the next step: A resumed, its new best saved, over nothing but its own files
    code, _, err = run_command(train_cli.main, capsys, "--resume", a, "run.epochs=2")
    assert code == 0, err
    assert set(snapshot(a)) == set(before)


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
    before = snapshot(tmp_path)
    run = tmp_path / out / name
    with pytest.raises(UserError) as e, rundir.claim(run, resuming=False):
        pass
    message = str(e.value)
    assert "\n" not in message and message.startswith(key + "=")
    value = str(run.parent) if key == "run.out_dir" else name
    assert message.startswith(f"{key}={value}: ")
    assert snapshot(tmp_path) == before  # not even the run folder was made


def test_a_folder_that_merely_holds_a_recipe_or_a_model_may_hold_runs(tmp_path):
    """A project folder with its own recipe.toml, or a downloaded model.safetensors, or
    a checkpoints/ folder of another tool, is no run folder: runs/ below it is fine."""
    (tmp_path / "recipe.toml").write_text("")
    (tmp_path / layout.MODEL).write_text("")
    (tmp_path / "checkpoints" / "step-100").mkdir(parents=True)
    with rundir.claim(tmp_path / "runs" / "x", resuming=False) as tag:
        assert tag is None


def test_a_save_never_replaces_a_folder_it_did_not_write(run_a, capsys):
    """What a run made inside A's best checkpoint (before this was refused) left there: A's
    resume refuses before training, and a save refuses, deleting nothing."""
    a, _ = run_a
    best = a / "checkpoints" / "best"
    (best / "recipe.toml").write_text('[run]\nname = "best"\n')
    (best / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (best / "checkpoints" / "last").mkdir(parents=True)
    (best / "checkpoints" / "last" / layout.META).write_text("{}")
    before = snapshot(a)
    code, _, err = run_command(train_cli.main, capsys, "--resume", a, "run.epochs=2")
    line = one_line(code, err)
    assert line.startswith(f"error: {best}: not only a checkpoint: it also holds 'checkpoints'")
    assert snapshot(a) == before
    # the store's own check, for a save that gets there anyway
    for name in ("recipe.toml", "metrics.jsonl", "checkpoints"):
        (best / name).rename(a.parent / name)  # what the user does: moves them out
    trainer = Trainer(tiny_recipe(a.parent.parent / "data", a.parent, run={**TINY, "name": "A"}), a)
    for tag in ("best", ".last.old", ".best.tmp"):
        (a / "checkpoints" / tag).mkdir(exist_ok=True)
        (a / "checkpoints" / tag / "notes.txt").write_text("mine")
        before = snapshot(a)
        with pytest.raises(UserError) as e:
            trainer.save("last" if tag == ".last.old" else "best")
        assert str(e.value).startswith(
            f"{a / 'checkpoints' / tag}: not only a checkpoint: it also holds 'notes.txt'"
        )
        assert str(e.value).endswith(f"then continue with --resume {a}")
        assert snapshot(a) == before, tag
        (a / "checkpoints" / tag / "notes.txt").unlink()
    (a / "checkpoints" / "last").rename(a / "elsewhere")
    (a / "checkpoints" / "last").symlink_to(a / "elsewhere")
    with pytest.raises(UserError, match=r"checkpoints/last: a symbolic link, not a checkpoint"):
        trainer.save("last")
    assert (a / "elsewhere" / layout.META).is_file()
    (a / "checkpoints" / "last").unlink()
    trainer.save("last")  # ours again: saved as ever
    trainer.save("best")
    assert layout.foreign(a / "checkpoints" / "best") is None


def test_a_fresh_start_refuses_checkpoint_folders_it_did_not_write(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / ".best.tmp").mkdir(parents=True)  # a first save cut off
    (run / "checkpoints" / ".best.tmp" / "data.csv").write_text("mine")
    (run / "recipe.toml").write_text("")
    refused = pytest.raises(UserError, match=r"\.best\.tmp: not only a checkpoint")
    with refused, rundir.claim(run, resuming=False):
        pass
    assert (run / "checkpoints" / ".best.tmp" / "data.csv").read_text() == "mine"
