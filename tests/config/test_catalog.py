"""Packaged recipes (``config/catalog.py``): found by name, a path winning over a name,
extends resolved beside the recipe then among the packaged ones, descriptions from the
header comment."""

from __future__ import annotations

from pathlib import Path

import pytest

from altgrad_triton.config import catalog
from altgrad_triton.config import recipe as recipes
from altgrad_triton.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_folder_or_a_device_is_not_a_recipe_file(tmp_path):
    with pytest.raises(UserError, match="a folder, not a recipe file .altgrad-suite runs"):
        catalog.locate(tmp_path)
    with pytest.raises(UserError, match="/dev/null: not a regular file; a recipe is a TOML file"):
        catalog.locate("/dev/null")
    assert catalog.locate("recipes/wt2").name == "wt2.toml"  # a name beside a folder still works


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


def test_a_header_comment_runs_to_the_first_key_across_blank_lines(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("# What it is.\n\n# Why, after a blank line.\n\n[run]\n# not this\n")
    assert catalog.header_comment(path) == ["# What it is.", "#", "# Why, after a blank line."]
    assert catalog.description(path) == "What it is."
