"""altgrad-tune: time every candidate launch config of the kernels a recipe uses on this
GPU and store the fastest per (device, Triton version, kernel, dtype, size bucket).

    altgrad-tune recipes/wt2.toml
    altgrad-tune recipes/wt2.toml run.dtype=bfloat16 --quick
    altgrad-tune --shapes fo_pool:B=20,T=200,H=1550 sg_loss:N=109000 --dtype bfloat16
    altgrad-tune recipes/wt2-lstm.toml --dry-run      # the launches and keys, no GPU needed
    altgrad-tune --check-configs                      # every candidate, sm_80-sm_90, no GPU
    altgrad-tune --check-configs --arch sm_86         # one architecture's candidates
    altgrad-tune --check-configs --record tests/fixtures/config_fit   # refresh CI's record
    altgrad-tune recipes/wt2.toml --quick --jobs 8    # compile on 8 processes, then time
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from ..kernels.arch import ARCHS
from .common import command_parser, number_from, run_main


def _sweep_options(p: argparse.ArgumentParser) -> None:
    """How long and where a sweep runs, and whether it stores its winners."""
    p.add_argument(
        "--quick",
        action="store_true",
        help="at most 6 candidates per kernel (2 per validation/test forward), LSTM timed "
        "over <= 64 steps, short do_bench (warmup 10 ms, rep 40 ms)",
    )
    p.add_argument("--cache-dir", default=None, help="where winners.json lives")
    p.add_argument("--warmup", type=number_from(0), default=None, help="do_bench warmup, ms (25)")
    p.add_argument(
        "--rep",
        type=number_from(0, inclusive=False),
        default=None,
        help="do_bench repetition time, ms (100)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the launches, their override keys and candidate counts, no GPU needed; "
        "on a GPU also the kernels each compiles (recorded, nothing runs)",
    )
    p.add_argument("--no-save", action="store_true", help="time and print, do not store")


def parser() -> argparse.ArgumentParser:
    p = command_parser(
        "altgrad-tune",
        __doc__,
        "Winners go to --cache-dir, else $ALTGRAD_TUNE_DIR, else "
        "~/.cache/altgrad-triton/tune (winners.json); training applies the ones whose "
        "device name, capability and Triton version match.\n\nShape specs: "
        "fo_pool:B=,T=,H=[,O=0]  lstm:B=,T=,H=  sg_loss:N=  elementwise:N=[,U=50]  "
        "authors_scan:N=[,U=50]  linear_ce:N=,V=; "
        "each may add dtype=bfloat16; a kernel name (fo_pool_fwd, ...) in place of the "
        "family keeps only that kernel.",
    )
    p.add_argument("recipe", nargs="?", help="recipe TOML whose training launches to tune")
    p.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides")
    p.add_argument(
        "--shapes",
        nargs="+",
        metavar="SPEC",
        default=[],
        help="launch shapes by hand instead of (or besides) a recipe",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16", "bfloat16"),
        help="dtype of --shapes specs without their own dtype= (default float32)",
    )
    p.add_argument(
        "--kernels",
        default="",
        help="comma-separated kernel or family names to keep (default: all)",
    )
    _sweep_options(p)
    p.add_argument(
        "--check-configs",
        action="store_true",
        help="no GPU needed: compile, for each architecture (--arch), every candidate it "
        "offers of the kernels the recipes (positional arguments; default every shipped "
        "recipes/*.toml, plus every family at the paper's sizes) launch, in bf16 and fp32, "
        "and report registers, spills and shared memory; exit 1 if one would not run",
    )
    p.add_argument(
        "--arch",
        default=None,
        metavar="LIST",
        help=f"--check-configs: comma-separated architectures (default {','.join(ARCHS)}); "
        "--dry-run: the one whose candidates to count (default: this GPU's; without one, "
        "the candidates every supported architecture offers)",
    )
    p.add_argument(
        "--record",
        default=None,
        metavar="DIR",
        help="--check-configs: also write the results to DIR/<triton version>.json, the "
        "record tests/tune/test_fitrecord.py checks (needs the full check: no recipe, every "
        "architecture); kernels that file already holds with unchanged sources are read "
        "from it, not compiled again (delete it to compile all)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="processes that compile in parallel, for --check-configs and for the sweep's "
        "warm-up, which compiles every candidate before timing (default: the cores this "
        "process may use; 1: compile each candidate as it is timed)",
    )
    return p


def _vocabulary(recipe, console) -> int | None:
    """The corpus's vocabulary, for the LM head's jobs; None (with a line that says so) when
    the corpus is not on this machine: the head then autotunes at its first launch."""
    from .. import tune

    try:
        return tune.recipe_vocabulary(recipe)
    except UserError as e:
        console.print(f"note: the LM head (linear_ce) is not tuned, as altgrad-tune does not "
                      f"download its corpus (it autotunes when training starts): {e}",
                      markup=False)  # fmt: skip
        return None


def _jobs(args: argparse.Namespace, console):
    from .. import tune
    from ..config import recipe as recipes

    jobs = []
    keep = _kept_kernels(args.kernels)
    overrides = list(args.overrides)
    path = args.recipe
    if path is not None and "=" in path and not Path(path).exists():
        overrides.insert(0, path)
        path = None
    if overrides and path is None:
        raise UserError("overrides need a recipe: altgrad-tune RECIPE key=value ...")
    if path is not None:
        recipe = recipes.load(path, overrides)
        head = keep is None or "linear_ce" in keep
        shapes = tune.shapes_from_recipe(recipe, _vocabulary(recipe, console) if head else None)
        jobs += tune.recipe_jobs(shapes, quick=args.quick)
    default_dtype = tune.DTYPES[args.dtype]
    for spec in args.shapes:
        jobs += tune.parse_shape_spec(spec, default_dtype, quick=args.quick)
    if not jobs and path is None and not args.shapes:
        raise UserError("give a recipe (e.g. recipes/wt2.toml) or --shapes SPEC ...")
    if keep is not None:
        jobs = [j for j in jobs if j.kernel in keep or j.family in keep]
    return jobs


def _kept_kernels(text: str) -> set[str] | None:
    """``--kernels``' names (kernels or families), checked; None keeps every kernel."""
    from .. import tune

    if not text:
        return None
    keep = {k.strip() for k in text.split(",") if k.strip()}
    known = set(tune.FAMILY_KERNELS) | {k for v in tune.FAMILY_KERNELS.values() for k in v}
    bad = sorted(keep - known)
    if bad:
        raise UserError(f"--kernels: unknown {bad}; known: {', '.join(sorted(known))}")
    return keep


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    if args.check_configs:
        recipes = [a for a in (args.recipe, *args.overrides) if a]
        return _check_configs(recipes, _archs(args.arch or ",".join(ARCHS)), args.jobs,
                              args.record)  # fmt: skip
    if args.record is not None:
        raise UserError("--record goes with --check-configs")
    target = None
    if args.arch is not None:
        if not args.dry_run:
            raise UserError("--arch goes with --check-configs or --dry-run (a sweep: this GPU)")
        (target, *more) = _archs(args.arch)
        if more:
            raise UserError("--dry-run counts the candidates of one --arch at a time")
    import torch

    from .. import tune
    from ..progress import make_console
    from ..tune.configcheck import usable_cores
    from ..tune.warmup import warm_up

    if not args.dry_run:
        _check_can_tune()
    console = make_console(wide_tables=True)
    jobs = _probed_jobs(args, console)
    if args.dry_run:
        console.print(_sized_for(target), markup=False)
        console.print(_dry_run_table(jobs, args.quick, target))
        return 0
    device = torch.device("cuda", torch.cuda.current_device())
    here = tune.present_device(device)
    warmup = args.warmup if args.warmup is not None else (10.0 if args.quick else 25.0)
    rep = args.rep if args.rep is not None else (40.0 if args.quick else 100.0)
    timer = tune.gpu_timer(warmup, rep)
    console.print(
        f"altgrad-tune on {here.name} (sm_{here.capability[0]}{here.capability[1]}), "
        f"torch {torch.__version__}, triton {here.triton}; do_bench warmup {warmup:g} "
        f"ms, rep {rep:g} ms; {len(jobs)} launches",
        markup=False,
    )
    warm_up(jobs, device, args.jobs or usable_cores(), console, quick=args.quick)
    results, winners, path = tune.tune_all(
        jobs, device, here, timer, console, quick=args.quick,
        path=None if args.no_save else tune.winners_path(args.cache_dir),
    )  # fmt: skip
    if any(r.aborted for r in results):
        return 1
    if not winners:
        raise UserError("every candidate failed; nothing stored (see the tables above)")
    return 0


def _archs(text: str) -> list[str]:
    """``--arch``'s names, checked against the supported architectures."""
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in ARCHS]
    if bad or not names:
        raise UserError(f"--arch: unknown {bad or text!r}; supported: {', '.join(ARCHS)}")
    return names


def _check_configs(recipe_paths: list[str], archs: list[str], jobs: int | None,
                   record: str | None) -> int:  # fmt: skip
    """``--check-configs``: compile every candidate of each architecture and print the
    table; with ``record``, write the results where tests/tune/test_fitrecord.py reads them."""
    import time

    from ..progress import make_console
    from ..tune import configcheck, fitrecord

    if record is not None and (recipe_paths or set(archs) != set(ARCHS)):
        raise UserError("--record needs the full check: no recipe and every --arch")
    paths = recipe_paths or configcheck.shipped_recipes()
    if not paths:
        raise UserError("--check-configs: no recipe given and no recipes/*.toml here")
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"--check-configs: recipe {str(path)!r} is not a file")
    specs = configcheck.check_scope(paths, archs, families=not recipe_paths)
    console = make_console(wide_tables=True)
    known = _recorded(fitrecord, record, specs, console)
    todo = [s for s in specs if s not in known]
    start = time.perf_counter()
    compiled = dict(zip(todo, configcheck.check_specs(todo, jobs), strict=True)) if todo else {}
    wall = time.perf_counter() - start
    results = [compiled[s] if s in compiled else known[s] for s in specs]
    title = f"compile check ({', '.join(archs)}): {', '.join(str(p) for p in paths)}"
    console.print(configcheck.results_table(results, title))
    bad = [r for r in results if not r.fits]
    kernels = {configcheck.compile_key(r.spec): r.seconds for r in compiled.values()}
    cpu = sum(kernels.values())
    reused = len({configcheck.compile_key(r.spec) for r in known.values()})
    console.print(
        f"{len(results)} candidates, {len(kernels)} distinct kernels compiled in {wall:.0f} s "
        f"({cpu:.0f} s of compile time, {cpu / max(len(kernels), 1):.2f} s each)"
        + (f", {reused} read from the record" if reused else "")
        + f"; {len(bad)} would not run",
        markup=False,
    )  # fmt: skip
    if record is not None:
        path = fitrecord.write(fitrecord.record_path(record), results)
        console.print(f"recorded {len(kernels) + reused} kernels in {path}", markup=False)
    return 1 if bad else 0


def _recorded(fitrecord, record: str | None, specs: list, console) -> dict:
    """With ``--record``, the specs whose kernel the existing record for this Triton holds
    with an unchanged source (compiling it again would give the same figures: the same
    Triton, ptxas and inputs); delete the file to compile everything again."""
    if record is None:
        return {}
    path = fitrecord.record_path(record)
    if not path.exists():
        return {}
    try:
        found = fitrecord.lookup(fitrecord.load(path), specs)
    except ValueError as e:
        console.print(f"note: {e}; compiling every kernel", markup=False)
        return {}
    return {r.spec: r for r in found.results}


def _check_can_tune() -> None:
    """A one-line error unless compiled kernels can run here (a GPU, no interpreter)."""
    import torch

    from ..kernels import interpreting

    if not torch.cuda.is_available():
        raise UserError(
            "altgrad-tune needs a CUDA GPU and none is visible "
            "(torch.cuda.is_available() is False); --dry-run lists the launches"
        )
    if interpreting():
        raise UserError(
            "TRITON_INTERPRET is set: the kernels would run on the CPU "
            "interpreter; unset it (or export TRITON_INTERPRET=0) to tune"
        )


def _probed_jobs(args: argparse.Namespace, console) -> list:
    """The selected launches of registered kernels, each with its probed override key, one
    per key; a note for every one left out."""
    from .. import tune
    from ..kernels import tuning

    jobs = _jobs(args, console)
    registered = set(tuning.kernels())
    known = {k for v in tune.FAMILY_KERNELS.values() for k in v}
    for name in sorted(registered - known):
        console.print(
            f"note: kernel {name!r} is registered but altgrad-tune has no launcher for it; skipped",
            markup=False,
        )
    for j in jobs:
        if j.kernel not in registered:
            console.print(
                f"note: {j.kernel} is not registered by the kernels package; skipped", markup=False
            )
    probed = []
    for j in (j for j in jobs if j.kernel in registered):
        try:
            j.key = tune.probe_key(j)
        except RuntimeError as e:
            console.print(f"note: {e}; skipped", markup=False)
            continue
        probed.append(j)
    jobs = tune.unique_jobs(probed)
    if not jobs:
        raise UserError("nothing to tune: no launch of a registered kernel was selected")
    return jobs


def _dry_run_table(jobs: list, quick: bool, target: str | None = None):
    """The launches, their keys and candidates for ``target`` (an architecture; None: this
    GPU's, else what every supported architecture offers), and what they compile: on a GPU
    without a ``target`` the kernels recorded at the JIT's compile step (exact: every
    kernel of a launch, every launch mode); elsewhere the distinct configs, an estimate."""
    from rich.table import Table

    from .. import tune

    recorded = _recorded_builds(jobs, quick) if target is None else None
    table = Table(title="launches to tune (dry run)", title_justify="left")
    for col in ("kernel", "shape", "dtype", "override key", "candidates"):
        table.add_column(col)
    table.add_column("compiles" if recorded else "configs")
    configs = 0
    for i, j in enumerate(jobs):
        metas = tune.job_candidates(j, quick=quick, arch=target)
        n = len(recorded[i]) if recorded else config_count(metas)
        configs += n
        table.add_row(j.kernel, j.shape, tune.dtype_name(j.dtype), str(tuple(j.key)),
                      str(len(metas)), str(n))  # fmt: skip
    if recorded:
        distinct = len({repr(b) for builds in recorded for b in builds})
        table.caption = f"{distinct} kernels to compile on a cold cache (recorded on this GPU)"
    else:
        table.caption = (
            f"{configs} distinct configs to compile; a launch can compile several kernels, "
            "which a dry run on a GPU records and counts"
        )
    return table


def _sized_for(target: str | None) -> str:
    """The line a dry run prints first: which architecture its candidates are for."""
    from ..kernels import tuning

    name = tuning.target_name(target)
    if target is not None:
        return f"candidates for {name} (--arch)"
    if name == "every supported architecture":
        return f"candidates for {name}: those each of them offers (no GPU here; --arch names one)"
    return f"candidates for {name} (this GPU)"


def _recorded_builds(jobs: list, quick: bool) -> list[list] | None:
    """Per job, the kernels its candidates compile, recorded on this CUDA device without
    running them (altgrad-tune's warm-up records the same); None without one, or when
    nothing could be recorded."""
    import torch

    from ..kernels import interpreting
    from ..tune.warmup import record_builds

    if interpreting() or not torch.cuda.is_available():
        return None
    device = torch.device("cuda", torch.cuda.current_device())
    recorded = [record_builds([job], device, quick=quick) for job in jobs]
    return recorded if any(recorded) else None  # a JIT this Triton cannot record


def config_count(metas: list[dict]) -> int:
    """Distinct configs among a job's candidates: SPLIT_K is a runtime argument and
    GRAPH_STEPS a host-side count, so candidates that differ only there share one."""
    runtime = ("SPLIT_K", "GRAPH_STEPS")
    return len({tuple(sorted((k, v) for k, v in m.items() if k not in runtime)) for m in metas})


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
