"""A suite: every recipe of a folder, for every seed, one after the other, resumable.

Recipes: every ``*.toml`` below the folder (sub-folders included, sorted by path), except
files whose name starts with ``_``: those are bases that recipes ``extends`` and are never
run themselves.

Each (recipe, seed) becomes the run ``<out>/<run.name>-s<seed>`` (``run.name`` as the
recipe resolves it, after the suite's overrides), trained with ``run.seed=<seed>``. Its
status decides what the suite does with it:

* ``done``: ``results.json`` exists -- skipped;
* ``resume``: a complete checkpoint but no ``results.json`` (interrupted) --
  continued with ``altgrad-train --resume``;
* ``run``: nothing to continue -- trained from the start; a folder that a run stopped in
  before its first checkpoint was complete is taken over afresh (``rundir.py``).

So a suite stopped at any point is continued by running the same command again. Runs go
through ``python -m altgrad_triton.cli.train`` as subprocesses (the same code path as
``altgrad-train``; one process, one run, memory returned between runs).

Stopping: Ctrl-C (or SIGINT/SIGTERM sent to the suite alone, e.g. by ``kill``) reaches the
running training process as exactly one SIGINT, so it saves its checkpoint and exits, and the
suite stops after it; the same command later resumes that run. A second Ctrl-C is forwarded
too and means what it means to ``altgrad-train``: abort without saving.
"""

from __future__ import annotations

import fnmatch
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import catalog
from ..config import recipe as recipes
from ..config.names import seeded_name
from ..errors import UserError
from ..run import folder as rundir
from ..run.values import run_folder


@dataclass(frozen=True)
class PlannedRun:
    recipe: Path
    name: str  # <run.name>-s<seed>
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]  # everything passed to altgrad-train after the recipe

    @property
    def status(self) -> str:
        return rundir.status(self.run_dir)

    def command(self) -> list[str]:
        train = [sys.executable, "-m", "altgrad_triton.cli.train"]
        if self.status == "resume":
            return [*train, "--resume", str(self.run_dir)]
        return [*train, str(self.recipe), *self.overrides]


def find_recipes(folder: str | Path) -> list[Path]:
    """The recipes a suite runs: a file, a folder's ``*.toml`` (not the ``_*`` bases), or
    a packaged recipe or folder of that name (``evidence/wt2``)."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        named = catalog.packaged(str(folder)) or catalog.packaged_folder(str(folder))
        if named is None:
            raise UserError(f"{folder}: no such recipe folder, nor a packaged one")
        return find_recipes(named)
    found = sorted(p for p in folder.rglob("*.toml") if not p.name.startswith("_"))
    if not found:
        raise UserError(f"{folder}: holds no recipes (*.toml not starting with '_')")
    return found


def check_seeds(seeds: list[int]) -> None:
    """``--seeds`` of a command that runs one run per seed (altgrad-suite, altgrad-horizon):
    at least one, none twice (a repeated seed would count the same run twice)."""
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(
            f"--seeds: {' '.join(map(str, repeated))} given more than once; each seed is one "
            "run, and a repeated one would count the same run twice"
        )


def plan(
    folder: str | Path,
    seeds: list[int],
    out: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    only: str | None = None,
) -> list[PlannedRun]:
    """Every (recipe, seed) run, recipe-major; every recipe is validated first.

    ``only``: a shell pattern (fnmatch) on run.name without the seed, e.g. ``"wt2-*-t10"``.
    """
    check_seeds(seeds)
    out = Path(out)
    runs: list[PlannedRun] = []
    names: dict[str, Path] = {}
    for path in find_recipes(folder):
        base = recipes.load(path, overrides)  # validates: a typo fails before any training
        base_name = run_folder(base).name
        if base_name in names:
            raise UserError(
                f"{path}: run.name {base_name!r} is also the name of "
                f"{names[base_name]}; give each recipe its own run.name"
            )
        names[base_name] = path
        if only and not fnmatch.fnmatchcase(base_name, only):
            continue
        for seed in seeds:
            name = seeded_name(base_name, seed)
            extra = (*overrides, f"run.name={name}", f"run.seed={seed}", f"run.out_dir={out}")
            recipes.load(path, extra)
            runs.append(PlannedRun(path, name, seed, out / name, tuple(extra)))
    if not runs:
        raise UserError(f"--only {only!r}: matches no recipe's run.name in {folder}")
    return runs


def describe(runs: list[PlannedRun]) -> str:
    counts = {s: sum(r.status == s for r in runs) for s in ("done", "resume", "run")}
    lines = [
        f"{len(runs)} runs: {counts['done']} done (skipped), {counts['resume']} to "
        f"resume, {counts['run']} to run"
    ]
    for i, r in enumerate(runs, 1):
        lines.append(f"  [{i:>3}/{len(runs)}] {r.status:<6} {r.name:<40} {r.recipe}")
    return "\n".join(lines)


INTERRUPTED = 130  # altgrad-train's exit code after a Ctrl-C that saved a checkpoint


def run_training(cmd: list[str]) -> int:
    """Run one training process to its end; return its exit code, or ``INTERRUPTED`` if the
    suite was asked to stop meanwhile.

    The child gets a process group of its own, so a terminal's Ctrl-C (sent to the whole
    foreground group) does not reach it directly. The suite forwards it instead, once per
    signal it receives: otherwise a single Ctrl-C would arrive twice, which ``altgrad-train``
    reads as "abort without saving", and a signal sent to the suite alone would never reach
    the run at all. The child starts with SIGINT at its default even when the suite was
    started with it ignored (``altgrad-suite ... &`` in a script): it would otherwise inherit
    "ignored" and run on, deaf to the forwarded signal, until it installs its own handler.
    The handlers are in place before the child starts, so a signal that arrives while it is
    being started is forwarded as soon as it exists.
    """
    child: subprocess.Popen | None = None
    stop = pending = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stop, pending
        stop = True
        if child is None:
            pending = True  # forwarded once the child exists
        else:
            child.send_signal(signal.SIGINT)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        child = subprocess.Popen(cmd, process_group=0, preexec_fn=_default_sigint)
        if pending:  # arrived while the child was being started
            child.send_signal(signal.SIGINT)
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return INTERRUPTED if stop else code


def _default_sigint() -> None:
    """In the child, before it runs: SIGINT at its default (Python then raises
    KeyboardInterrupt until the trainer installs its own handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def execute(
    runs: list[PlannedRun],
    *,
    echo: Callable[[str], None] = print,
    runner: Callable[[list[str]], int] | None = None,
) -> list[PlannedRun]:
    """Train every run that is not done, in order; return the ones that failed.

    A run interrupted with Ctrl-C (exit code 130) stops the suite; another failure is
    reported and the suite goes on with the next run. ``runner`` (a command to an exit
    code) defaults to ``run_training``; tests pass their own.
    """
    runner = runner or run_training
    failed: list[PlannedRun] = []
    t_suite = time.perf_counter()
    for i, r in enumerate(runs, 1):
        status = r.status
        tag = f"[{i}/{len(runs)}] {r.name}"
        if status == "done":
            echo(f"{tag}: done already, skipped")
            continue
        echo(
            f"{tag}: {'resuming' if status == 'resume' else 'starting'} "
            f"({time.perf_counter() - t_suite:.0f} s into the suite)"
        )
        t0 = time.perf_counter()
        rc = runner(r.command())
        if rc == INTERRUPTED:
            raise UserError(
                f"suite interrupted during {r.name}; run the same command again "
                "to continue where it stopped",
                exit_code=INTERRUPTED,
            )
        if rc != 0:
            echo(f"{tag}: FAILED with exit code {rc}")
            failed.append(r)
        else:
            echo(f"{tag}: finished in {time.perf_counter() - t0:.0f} s")
    return failed
