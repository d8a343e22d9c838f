"""The recipe stops at the builders: outside ``config/`` and the builder modules no module
reads a recipe key; it gets what it acts on from what the builders hand out (components,
``RunFolder``, ``TrainingShape``, ``RunValues``, ``RecipeShapes``).

What counts as reading a recipe key, found in a module's syntax tree (the sections and keys
are the ``Recipe`` dataclass's fields, so a new key is covered without editing this file):

* an attribute chain ``<anything>.<section>.<key>`` whose ``<section>`` is a field of
  ``Recipe`` and ``<key>`` a field of that section (``recipe.bptt.length``,
  ``run.recipe.data.corpus``, ``r.synthetic.authors``);
* a section taken whole from something named ``recipe`` or ``*_recipe``
  (``d = recipe.data``, ``self.recipe.run``, ``getattr(recipe.data, key)``), whose keys
  would then be read under another name.

Passing a recipe along (to a builder, to ``config``'s functions) is not a read, nor is
indexing the plain dict of a stored ``recipe.toml`` (the report reads old run folders as
they are). A miss needs a key reached by a string (``getattr(recipe, "bptt")``), which
nothing does.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from altgrad_triton.config.recipe import Recipe

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "altgrad_triton"

READERS = ("config/", "run/build.py", "run/values.py", "run/shapes.py")
"""Where the recipe may be read: its own wing, and the builders that hand it out."""


def recipe_keys() -> dict[str, set[str]]:
    """Each section of ``Recipe`` -> the names of its keys (and sub-sections)."""
    hints = typing.get_type_hints(Recipe)
    return {
        f.name: {k.name for k in dataclasses.fields(hints[f.name])}
        for f in dataclasses.fields(Recipe)
    }


KEYS = recipe_keys()


def _named_recipe(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return name == "recipe" or name.endswith("_recipe")


def _reads(node: ast.Attribute) -> bool:
    parent = node.value
    if isinstance(parent, ast.Attribute) and node.attr in KEYS.get(parent.attr, ()):
        return True  # <anything>.<section>.<key>
    return node.attr in KEYS and _named_recipe(parent)  # recipe.<section>


def recipe_reads(source: str) -> list[tuple[int, str]]:
    """(line, the expression) of every recipe key ``source`` reads, by the rules above; a
    chain once, at its longest (``recipe.bptt.length``, not also ``recipe.bptt``)."""
    reads = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute) and _reads(n)]
    inner = {id(n.value) for n in reads}
    return sorted({(n.lineno, ast.unparse(n)) for n in reads if id(n) not in inner})


def package_modules() -> dict[str, Path]:
    """Each module of the package, by its path under ``altgrad_triton/``."""
    return {str(p.relative_to(PACKAGE)): p for p in sorted(PACKAGE.rglob("*.py"))}


def may_read(module: str) -> bool:
    return module.startswith(READERS)


def test_only_config_and_the_builders_read_recipe_keys():
    reads = [
        f"altgrad_triton/{module}:{line}: {expression}"
        for module, path in package_modules().items()
        if not may_read(module)
        for line, expression in recipe_reads(path.read_text(encoding="utf-8"))
    ]
    assert not reads, (
        "recipe keys read outside config/ and the builders (take them from what the builders "
        "hand out instead: run.values, run.shapes, build's components):\n" + "\n".join(reads)
    )


def test_the_listed_modules_exist():
    """A renamed builder must not leave a stale entry behind."""
    modules = package_modules()
    assert [r for r in READERS if not any(m.startswith(r) for m in modules)] == []


PLANTED = """
def plant(recipe, run, args, shapes):
    length = recipe.bptt.length
    corpus = run.recipe.data.corpus
    window = recipe.synthetic.authors.window
    d = recipe.data
    backend = getattr(self_recipe.run, "backend")
    return args.run, shapes.bptt, run.values.bptt, args.model.name
"""


def test_a_planted_read_is_found():
    """The rules find each kind of read, and leave what is not one alone: ``args.run`` (no
    key after it, not named recipe), ``shapes.bptt`` and ``run.values.bptt`` (plain values),
    ``args.model.name`` (``name`` is no key of ``[model]``)."""
    assert recipe_reads(PLANTED) == [
        (3, "recipe.bptt.length"),
        (4, "run.recipe.data.corpus"),
        (5, "recipe.synthetic.authors"),
        (6, "recipe.data"),
        (7, "self_recipe.run"),
    ]


def test_a_planted_module_fails_the_check(tmp_path, monkeypatch):
    """The package check itself fails, naming the line, on a module that reads a key."""
    planted = {**package_modules(), "report/planted.py": tmp_path / "planted.py"}
    (tmp_path / "planted.py").write_text("def f(recipe):\n    return recipe.run.seed\n")
    monkeypatch.setitem(globals(), "package_modules", lambda: planted)
    try:
        test_only_config_and_the_builders_read_recipe_keys()
    except AssertionError as e:
        assert "altgrad_triton/report/planted.py:2: recipe.run.seed" in str(e)
    else:
        raise AssertionError("a planted recipe read passed")
