"""altgrad-train: train a language model from a recipe, or resume a run.

    altgrad-train recipes/wt2-small.toml
    altgrad-train wt2-small                           # the same recipe by its packaged name
    altgrad-train recipes/wt2.toml --dump-config
    altgrad-train --resume runs/wt2-small run.epochs=6
    altgrad-train --finetune runs/wt2-awd-lstm        # AWD's fine-tuning, into a new run

Data-parallel on several GPUs or machines: start it with torchrun, e.g.

    torchrun --nproc-per-node 4 -m altgrad_triton.cli.train recipes/wt2.toml

Each rank trains data.batch_size / world-size columns of the batch (see
``run/distributed.py``; the failure policy is ``run/launch.py``); rank 0 alone prints and
writes the run directory.

The writer holds the run directory for the whole run (``rundir.claim``: a lock, which also
proves it writable before any data is loaded); a fresh start refuses a directory that
holds a run, and takes over one that a run left without a complete checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from ..config import recipe as recipes
from ..errors import UserError
from ..run import folder as rundir
from ..run.folder import RunFolder
from ..run.values import parent_folder, run_folder
from .common import CommandParser, run_main, with_version


def parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="altgrad-train",
        description=__doc__.split("\n\n")[0],
        epilog="Overrides are key.sub=value, values parsed as TOML (bare words as strings).",
    )
    with_version(p)
    p.add_argument(
        "recipe",
        nargs="?",
        help="recipe TOML file or packaged recipe name, e.g. wt2-small (altgrad-recipes ls); "
        "optional with --resume",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=3e-4")
    p.add_argument("--dump-config", action="store_true", help="print the resolved recipe, exit")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log to RUN_DIR/tensorboard/ (run.tensorboard=true; the tensorboard extra)",
    )
    p.add_argument(
        "--finetune",
        metavar="RUN_DIR",
        help="fine-tune RUN_DIR's best checkpoint with averaged SGD from the start (AWD-LSTM), "
        "into a new run (default name: its own + '-finetune'); its recipe, then overrides",
    )
    p.add_argument(
        "--dist-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="under torchrun: how long a rank waits for the others in a collective "
        "before the job fails (default $ALTGRAD_DIST_TIMEOUT, else 600)",
    )
    return p


def resolve(args: argparse.Namespace) -> tuple[recipes.Recipe, Path]:
    """The recipe and run directory the arguments name."""
    overrides = list(args.overrides)
    path = args.recipe
    if path is not None and "=" in path and not Path(path).exists():
        overrides.insert(0, path)  # `--resume DIR key=value` puts an override first
        path = None
    if args.tensorboard:
        overrides.append("run.tensorboard=true")
    if args.finetune:
        if args.resume or path is not None:
            raise UserError("--finetune RUN_DIR takes its recipe from RUN_DIR: give no recipe file")
        recipe = finetune_recipe(Path(args.finetune).expanduser(), overrides)
        return recipe, run_folder(recipe).path
    if args.resume:
        run_dir = Path(args.resume).expanduser()
        if not RunFolder(run_dir).recipe.exists():
            raise UserError(
                f"--resume {run_dir}: not a run directory (no {RunFolder.RECIPE} there)"
            )
        if path is not None:
            raise UserError(
                f"--resume {run_dir} continues with the run's own {RunFolder.RECIPE}: give no "
                f"recipe ({path}); change a key with KEY=VALUE after it (e.g. run.epochs=8)"
            )
        recipe = recipes.load(RunFolder(run_dir).recipe, overrides)
        _same_name(run_dir, recipe)
        return recipe, run_dir
    if path is None:
        raise UserError(
            "give a recipe file or packaged name (e.g. wt2-small; altgrad-recipes ls lists "
            "them) or --resume RUN_DIR"
        )
    recipe = recipes.load(path, overrides)
    return recipe, run_folder(recipe).path


def _same_name(run_dir: Path, recipe: recipes.Recipe) -> None:
    """Refuse a resume that renames the run: it continues in ``run_dir`` whatever the name,
    and would write the other name into its recipe.toml."""
    stored, asked = (
        run_folder(recipes.load(RunFolder(run_dir).recipe)).name,
        run_folder(recipe).name,
    )
    if asked != stored:
        raise UserError(
            f"--resume {run_dir}: run.name={asked} would rename the run "
            f"{stored!r}, which a resume cannot (it continues in {run_dir}); leave run.name out"
        )


def finetune_recipe(parent: Path, overrides: list[str]) -> recipes.Recipe:
    """The parent run's recipe as a fine-tuning: ``run.parent`` (absolute) and the name
    ``<name>-finetune`` set, then the user's overrides."""
    folder = RunFolder(parent)
    if not folder.recipe.exists():
        raise UserError(f"--finetune {parent}: not a run directory (no {folder.RECIPE} there)")
    name = run_folder(recipes.load(folder.recipe)).name
    own = [
        f"run.parent={json.dumps(str(parent.resolve()))}",
        f"run.name={json.dumps(name + '-finetune')}",
    ]
    return recipes.load(folder.recipe, own + overrides)


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    recipe, run_dir = resolve(args)
    writer = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone writes
    if args.dump_config:
        if writer:
            sys.stdout.write(recipes.to_toml(recipe))
        return 0
    parent = None if args.resume else parent_folder(recipe)  # a resume may not need it
    if parent is not None and not parent.checkpoints.is_dir():  # now, not after the data
        raise UserError(
            f"run.parent={parent.path}: not a run directory (no {parent.checkpoints.name}/ "
            "there); give the folder of the run to fine-tune, its run.out_dir/run.name"
        )
    with (
        stops_outside_training(run_dir, plain="RANK" not in os.environ),
        rundir.claim(run_dir, resuming=bool(args.resume), writer=writer) as tag,
    ):
        return train(args, recipe, run_dir, tag)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # as run.stopping's


@contextlib.contextmanager
def stops_outside_training(run_dir: Path, *, plain: bool) -> Iterator[None]:
    """Ctrl-C, SIGTERM or SIGHUP while a plain (not torchrun) run starts (imports, data, the
    build) or tests its best checkpoint at the end: one ``stopped:`` line and 128 + the
    signal's number. Without this a SIGTERM there ended the process without a word. While
    the run trains, the trainer's own handlers stand in for these (``run.stopping``); under
    torchrun, ``run.launch`` has its own policy."""
    if not plain:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise UserError(
            f"interrupted by {signal.Signals(signum).name} outside training (while starting, "
            f"or testing at the end); nothing was saved then, and {run_dir} keeps what it had",
            exit_code=128 + signum,
            label="stopped",
        )

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def train(args: argparse.Namespace, recipe: recipes.Recipe, run_dir: Path, tag: str | None) -> int:
    """Train (or, with ``tag``, resume from that checkpoint): ``run.launch``, with the
    truncation probe per epoch as a hook (it does nothing unless the recipe asks)."""
    from ..probe.per_epoch import EpochProbe  # torch import deferred: --help stays fast
    from ..run.launch import launch

    return launch(recipe, run_dir, tag, args.dist_timeout, hooks=[EpochProbe(recipe, run_dir)])


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
