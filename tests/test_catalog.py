"""Packaged recipes: found by name, a path winning over a name, extends resolved beside the
recipe then among the packaged ones, and altgrad-recipes ls / show / cp."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from altgrad_triton.cli import recipes as recipes_cli
from altgrad_triton.config import catalog
from altgrad_triton.config import recipe as recipes
from altgrad_triton.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_the_packaged_recipes_are_the_repositorys_folder():
    assert catalog.packaged_root() == ROOT / "recipes"
    files = {
        p.relative_to(ROOT / "recipes").with_suffix("").as_posix()
        for p in (ROOT / "recipes").rglob("*.toml")
    }
    assert set(catalog.all_names()) == files
    assert "wt2/_base" not in catalog.names() and "wt2/alt-rb5" in catalog.names()


@pytest.mark.parametrize("text", ["wt2", "wt2.toml", "recipes/wt2.toml"])
def test_a_name_finds_the_packaged_file(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the clone: no recipes/ folder here
    assert catalog.locate(text) == ROOT / "recipes" / "wt2.toml"
    assert recipes.load(text).run.name == "wt2"


def test_a_nested_name_resolves_its_extends_chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = recipes.load("wt2/alt-rb5")
    assert r.synthetic.alternation.switch_at_restarts and r.model.hidden_size == 1550


def test_a_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wt2").write_text('run.name = "mine"\n')
    assert recipes.load("wt2").run.name == "mine"


def test_an_unknown_name_lists_close_matches():
    with pytest.raises(UserError) as e:
        catalog.locate("wt2/alt-rb6")
    msg = str(e.value)
    assert "\n" not in msg and "wt2/alt-rb6: recipe file not found" in msg
    assert "wt2/alt-rb5" in msg and "altgrad-recipes ls" in msg


def test_extends_falls_back_to_a_packaged_recipe(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "wt2-small.toml"\nrun.name = "mine"\n')
    r = recipes.load(mine)
    assert r.run.name == "mine" and r.data.corpus == recipes.load("wt2-small").data.corpus


def test_extends_prefers_the_file_beside_the_recipe(tmp_path):
    (tmp_path / "wt2-small.toml").write_text("run.epochs = 9\n")
    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "wt2-small.toml"\n')
    assert recipes.load(mine).run.epochs == 9


def test_descriptions_are_the_first_sentence_of_the_header():
    assert catalog.description(ROOT / "recipes" / "wt2/bptt.toml") == (
        "Baseline: plain truncated BPTT, constant learning rate."
    )
    text = catalog.description(ROOT / "recipes" / "wt2/awd-lstm.toml")
    assert (
        text.startswith("AWD-LSTM's WikiText-2 baseline (Merity et al. 2017") and len(text) <= 100
    )


def test_ls_lists_every_runnable_recipe_with_a_description(capsys):
    assert recipes_cli.main(["ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == catalog.names()
    assert all(len(line.split(None, 1)) == 2 for line in lines)


def test_cp_writes_a_self_contained_recipe_that_resolves_the_same(tmp_path, capsys):
    target = tmp_path / "copy.toml"
    assert recipes_cli.main(["cp", "wt2/alt-rb5", str(target)]) == 0
    text = target.read_text()
    assert "extends" not in tomllib.loads(text)
    assert recipes.load(target) == recipes.load("wt2/alt-rb5")
    # the comments of every file in the chain come along, each under its name
    chain = recipes.extends_chain(catalog.packaged("wt2/alt-rb5"))
    assert [catalog.display_name(p) for p in chain] == [
        "wt2/alt-rb5", "wt2/dni-rb5", "wt2/dni", "wt2/_base"
    ]  # fmt: skip
    for path in chain:  # less the sources' own `#   altgrad-train recipes/...` lines
        own = [x for x in catalog.header_comment(path) if "altgrad-train" not in x]
        assert own and f"# {catalog.display_name(path)}:\n" + "\n".join(own) + "\n" in text
    assert "altgrad-train recipes/" not in text
    assert catalog.description(target) == catalog.description(catalog.packaged("wt2/alt-rb5"))
    assert recipes_cli.main(["show", "wt2/alt-rb5"]) == 0
    assert recipes.to_toml(recipes.load(target)) in capsys.readouterr().out


def test_a_header_comment_runs_to_the_first_key_across_blank_lines(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("# What it is.\n\n# Why, after a blank line.\n\n[run]\n# not this\n")
    assert catalog.header_comment(path) == ["# What it is.", "#", "# Why, after a blank line."]
    assert catalog.description(path) == "What it is."


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["show", "nope"], "nope: recipe file not found"),
        (["cp", "wt2", "{tmp}/no/such/dir.toml"], "does not exist"),
        (["cp", "wt2", "{tmp}"], "exists; give a new file name"),
        ([], "give a command"),
        (["rm", "wt2"], "invalid choice"),
    ],
)
def test_mistakes_are_one_line(args, fragment, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.recipes", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


@pytest.mark.parametrize(
    "module",
    ["train", "recipes", "eval", "generate", "tune", "bench", "report", "suite", "horizon"],
)
def test_every_command_prints_its_versions(module):
    from importlib import metadata

    proc = subprocess.run(
        [sys.executable, "-m", f"altgrad_triton.cli.{module}", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"altgrad-{module} 0.1.0 (torch {metadata.version('torch')}, "
        f"triton {metadata.version('triton')})"
    )


def test_a_suite_takes_a_packaged_folder_by_name(tmp_path, monkeypatch):
    from altgrad_triton.experiments import suite

    monkeypatch.chdir(tmp_path)
    by_name = suite.plan("evidence/wt2", [1], "runs")
    by_path = suite.plan(ROOT / "recipes" / "evidence" / "wt2", [1], "runs")
    assert [r.name for r in by_name] == [r.name for r in by_path] and len(by_name) == 14
    with pytest.raises(UserError, match="evidence/wt3: no such recipe folder, nor a packaged"):
        suite.plan("evidence/wt3", [1], "runs")
