"""``altgrad-train``: train a language model from a recipe, or resume a run.

    altgrad-train recipes/wt2-small.toml data.path=../shared/data/wikitext-2
    altgrad-train recipes/wt2.toml --dump-config
    altgrad-train --resume runs/wt2-small run.epochs=6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import recipe as recipes
from ..errors import UserError
from .common import run_main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="altgrad-train", description=__doc__.split("\n\n")[0],
        epilog="Overrides are key.sub=value, values parsed as TOML (bare words as strings).")
    p.add_argument("recipe", nargs="?", help="recipe TOML file (optional with --resume)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=3e-4")
    p.add_argument("--dump-config", action="store_true", help="print the resolved recipe, exit")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    return p


def resolve(args: argparse.Namespace) -> tuple[recipes.Recipe, Path]:
    """The recipe and run directory the arguments name."""
    overrides = list(args.overrides)
    path = args.recipe
    if path is not None and "=" in path and not Path(path).exists():
        overrides.insert(0, path)  # `--resume DIR key=value` puts an override first
        path = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "recipe.toml").exists():
            raise UserError(f"--resume {run_dir}: not a run directory (no recipe.toml there)")
        recipe = recipes.load(path or run_dir / "recipe.toml", overrides)
        return recipe, run_dir
    if path is None:
        raise UserError("give a recipe file (e.g. recipes/wt2-small.toml) or --resume RUN_DIR")
    recipe = recipes.load(path, overrides)
    return recipe, Path(recipe.run.out_dir) / recipe.run.name


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    recipe, run_dir = resolve(args)
    if args.dump_config:
        sys.stdout.write(recipes.to_toml(recipe))
        return 0
    if not args.resume and (run_dir / "checkpoints").exists():
        raise UserError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                        "or pick another run.name=... or run.out_dir=...")
    from ..train import Trainer  # torch import deferred so --help and errors stay fast

    trainer = Trainer(recipe, run_dir)
    if args.resume:
        trainer.restore("last")
    trainer.fit()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
