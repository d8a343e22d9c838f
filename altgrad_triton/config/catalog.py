"""The recipes that ship inside the package, found by name.

The repository's ``recipes/`` folder is the one source: the wheel maps it into the package
as ``altgrad_triton/recipes`` (``pyproject.toml``); a clone, installed editable or not, has
it beside the package folder, in the source tree that holds ``pyproject.toml``. A recipe's
name is its path under that folder without ``.toml``: ``wt2``, ``wt2/alt-rb5``.

``locate`` turns what a user typed into a file: an existing path always wins, then a
packaged name (``recipes/wt2.toml`` typed outside a clone is the name ``wt2``). Files whose
name starts with ``_`` are bases other recipes extend; they resolve by name but are not
listed.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ..errors import UserError

SUFFIX = ".toml"


def packaged_root() -> Path | None:
    """The folder of packaged recipes, or None when this installation has none."""
    package = Path(__file__).resolve().parents[1]  # config/ -> the package
    if (package / "recipes").is_dir():  # an installed wheel
        return package / "recipes"
    tree = package.parent  # a clone (editable installs point into it)
    return tree / "recipes" if (tree / "pyproject.toml").is_file() else None


def all_names() -> list[str]:
    """Every packaged recipe's name, bases (``_*.toml``) included, sorted."""
    root = packaged_root()
    if root is None:
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*" + SUFFIX))


def names() -> list[str]:
    """The packaged recipes meant to be run (not the ``_*`` bases), sorted."""
    return [n for n in all_names() if not n.rsplit("/", 1)[-1].startswith("_")]


def packaged(name: str) -> Path | None:
    """The packaged file called ``name`` (with or without ``.toml``, or a leading
    ``recipes/``), or None."""
    root = packaged_root()
    key = name.removeprefix("recipes/").removesuffix(SUFFIX)
    if root is None or not key or key.startswith(("/", ".")):
        return None
    path = root / (key + SUFFIX)
    return path if path.is_file() else None


def packaged_folder(name: str) -> Path | None:
    """The packaged folder called ``name`` (``evidence/wt2``, or ``recipes/evidence/wt2``),
    or None."""
    root = packaged_root()
    key = name.removeprefix("recipes").strip("/")
    if root is None or key.startswith("."):
        return None
    path = root / key
    return path if path.is_dir() else None


def locate(text: str | Path) -> Path:
    """The recipe file ``text`` names: an existing path, else a packaged recipe; else a
    one-line error with the close names."""
    path = Path(text)
    if path.is_file():
        return path
    found = packaged(str(text))
    if found is not None:
        return found
    if path.is_dir():
        raise UserError(
            f"{text}: a folder, not a recipe file (altgrad-suite runs a folder's recipes)"
        )
    if path.exists():
        raise UserError(f"{text}: not a regular file; a recipe is a TOML file")
    raise UserError(unknown(str(text)))


def unknown(text: str) -> str:
    """The message for a recipe that is neither a file nor a packaged name."""
    key = text.removeprefix("recipes/").removesuffix(SUFFIX)
    close = difflib.get_close_matches(key, names(), n=4, cutoff=0.5)
    hint = f"; close: {', '.join(close)}" if close else ""
    return (
        f"{text}: recipe file not found, nor a packaged recipe of that name{hint} "
        "(altgrad-recipes ls lists them)"
    )


def header_comment(path: Path) -> list[str]:
    """A recipe file's leading comment lines, as written (what it is, why, how to run it):
    every comment before its first key, a blank line between them as a bare ``#``."""
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.rstrip()
        if text and not text.lstrip().startswith("#"):
            break
        lines.append(text or "#")
    while lines and lines[-1] == "#":
        lines.pop()
    return lines


def display_name(path: Path) -> str:
    """A packaged recipe's name (``wt2/_base.toml`` -> ``wt2/_base``), else the path."""
    root = packaged_root()
    resolved = path.resolve()
    if root is not None and resolved.is_relative_to(root.resolve()):
        return resolved.relative_to(root.resolve()).with_suffix("").as_posix()
    return str(path)


def description(path: Path) -> str:
    """A recipe's one-line description: the first sentence of its header comment."""
    words: list[str] = []
    for line in header_comment(path):
        text = line.strip()
        if text == "#" or text.startswith("#   "):  # a paragraph's end or a command
            break
        words += text.lstrip("#").split()
    sentence = " ".join(words)
    end = re.search(r"(?<! al)\.\s+(?=[A-Z(])", sentence)  # not "et al. 2017"
    if end:
        sentence = sentence[: end.start() + 1]
    return shorten(sentence, 100)


def shorten(text: str, width: int) -> str:
    """``text`` cut at a word to at most ``width`` characters, '...' marking a cut."""
    if len(text) <= width:
        return text
    return text[: width - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
