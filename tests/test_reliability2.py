"""Issue 24: no run can delete another, reports never invent seeds, one-line errors from
every command, and a preempted run (SIGTERM, SIGHUP) saves like Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import pytest

from altgrad_triton import recipe as recipes
from altgrad_triton import rundir
from altgrad_triton.errors import UserError
from tests.test_cli import assert_user_error, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "recipes" / "wt2-small.toml"


# ---------------------------------------------------------------------------- run names


@pytest.mark.parametrize(
    "override",
    [
        "run.name=",
        'run.name=""',
        'run.name="abc',
        "run.name=a/b",
        "run.name=..",
        "run.name=.",
        'run.name="a b"',
        'run.name="it\'s"',
        'run.name="a\\b"',
    ],
)
def test_a_run_name_that_is_not_one_folder_name_is_refused(override):
    with pytest.raises(UserError, match=r"run\.name: must be one non-empty folder name") as e:
        recipes.load(SMALL, [override])
    assert "\n" not in str(e.value)


def test_an_empty_run_name_is_one_line_from_the_command(tmp_path):
    proc = train(SMALL, "run.name=", f"run.out_dir={tmp_path}")
    assert_user_error(proc, "run.name: must be one non-empty folder name", "got ''")
    assert list(tmp_path.iterdir()) == []


def test_a_home_folder_in_a_path_key_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    r = recipes.load(SMALL, ['run.out_dir="~/x"', 'data.cache_dir="~/cache"', 'data.path="~/d"'])
    assert (r.run.out_dir, r.data.cache_dir, r.data.path) == (
        str(tmp_path / "x"),
        str(tmp_path / "cache"),
        str(tmp_path / "d"),
    )


def finished_run(folder: Path) -> None:
    """A finished run's files, as altgrad-train leaves them."""
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "checkpoints" / "best" / "meta.json").write_text('{"epoch": 2}')
    (folder / "recipe.toml").write_text('[run]\nname = "checkpoints"\n')
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 5.0}\n')
    (folder / "results.json").write_text('{"best_val_loss": 5.0}')


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
