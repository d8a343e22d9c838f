"""altgrad-recipes: list, show and copy the recipes that ship with the package.

    altgrad-recipes ls                      # names and one-line descriptions
    altgrad-recipes show wt2/alt-rb5        # resolved, every key with its help text
    altgrad-recipes cp wt2-small my.toml    # a self-contained copy to edit
    altgrad-train my.toml                   # train it (a packaged name works too: wt2-small)

A name is a recipe's path under recipes/ without .toml. ``cp`` flattens the ``extends``
chain into one file (the resolved recipe, as ``show`` prints it), so the copy needs
nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import catalog
from ..config import recipe as recipes
from ..errors import UserError
from ..files import write_text_atomic
from .common import command_parser, run_main


def parser() -> argparse.ArgumentParser:
    p = command_parser("altgrad-recipes", __doc__)
    sub = p.add_subparsers(dest="command", metavar="{ls,show,cp}")
    sub.add_parser("ls", help="list the packaged recipes with their descriptions")
    show = sub.add_parser("show", help="print a recipe resolved (extends and defaults filled in)")
    show.add_argument("name", help="packaged name (wt2/alt-rb5) or recipe file")
    cp = sub.add_parser("cp", help="write a self-contained copy of a recipe to FILE")
    cp.add_argument("name", help="packaged name (wt2/alt-rb5) or recipe file")
    cp.add_argument("file", help="where to write it (refused if it exists)")
    return p


def listing() -> str:
    """The ``ls`` table: each runnable packaged recipe's name and description."""
    names = catalog.names()
    if not names:
        raise UserError("this installation has no packaged recipes (reinstall altgrad-triton)")
    width = max(len(n) for n in names)
    rows = [f"{n:<{width}}  {catalog.description(catalog.locate(n))}" for n in names]
    return "\n".join(rows) + "\n"


def copy(name: str, target: Path) -> None:
    """Write ``name`` resolved to ``target``, under a header saying where it came from and
    the comments of every file in its ``extends`` chain (what the recipe is and why)."""
    if target.exists():
        raise UserError(f"{target}: exists; give a new file name (cp never overwrites)")
    if not target.parent.is_dir():
        raise UserError(f"{target}: folder {target.parent} does not exist")
    source = catalog.locate(name)
    body = recipes.to_toml(recipes.load(source))
    header = [
        f"# {catalog.description(source)}",
        f"# Copied from {name} by altgrad-recipes cp: every key resolved (its extends chain",
        "# flattened) with its help text. The source files' own comments follow.",
        f"#   altgrad-train {target}",
    ]
    for path in recipes.extends_chain(source):
        own = [x for x in catalog.header_comment(path) if not _runs_a_source(x)]
        if own:
            header += ["#", f"# {catalog.display_name(path)}:", *own]
    write_text_atomic(target, "\n".join(header) + "\n\n" + body)


def _runs_a_source(comment: str) -> bool:
    """A source's own ``#   altgrad-train recipes/...`` line: the copy runs otherwise."""
    return comment.lstrip("# ").startswith("altgrad-train ")


def body(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "ls":
        sys.stdout.write(listing())
    elif args.command == "show":
        sys.stdout.write(recipes.to_toml(recipes.load(args.name)))
    elif args.command == "cp":
        copy(args.name, Path(args.file))
        print(f"wrote {args.file}")
    else:
        raise UserError(
            "give a command: ls, show NAME or cp NAME FILE (see altgrad-recipes --help)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
