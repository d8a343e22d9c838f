"""altgrad-recipes: ls lists every runnable recipe, cp writes a self-contained one that
resolves the same, show prints it, and each mistake is one line."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from altgrad_triton.cli import recipes as recipes_cli
from altgrad_triton.config import catalog
from altgrad_triton.config import recipe as recipes


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
