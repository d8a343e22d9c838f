"""altgrad-doctor: check every Triton kernel family on this GPU, at a recipe's shapes, in
fp32 and bf16: its forward and every gradient against the PyTorch reference (the kernel
guard's comparison and tolerances), and its time against the reference's. Run it first on a
new GPU; a family that fails here would fall back to PyTorch in training.

    altgrad-doctor                       # the paper's shapes (recipe wt2)
    altgrad-doctor wt2-lstm              # another recipe's shapes
    altgrad-doctor wt2 --json            # the outcomes as JSON, for scripts
    TRITON_INTERPRET=1 altgrad-doctor    # no GPU: the interpreter, at small shapes

Exit code 0 when every family passed (or without a GPU, where it checks nothing and says
so), 1 when any would fall back, 2 on a mistake (a recipe or option, GPU or not).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError
from .common import command_parser, run_main

NO_GPU = (
    "altgrad-doctor: no CUDA device here, so no kernel can be checked on hardware; "
    "TRITON_INTERPRET=1 altgrad-doctor runs every family through Triton's CPU interpreter "
    "at small shapes (its results, not its speed)"
)


def parser() -> argparse.ArgumentParser:
    p = command_parser("altgrad-doctor", __doc__)
    p.add_argument("recipe", nargs="?", default="wt2", help="recipe whose shapes to check (wt2)")
    p.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides")
    p.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per path (median; 5)")
    return p


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if args.repeats < 0:
        raise UserError(f"--repeats: must be >= 0, got {args.repeats}")
    from ..config import recipe as recipes

    recipe = recipes.load(args.recipe, args.overrides)  # a mistake is one, GPU or not
    import torch  # deferred: --help and the no-GPU line stay fast

    from ..kernels import interpreting
    from ..tune import doctor

    if not torch.cuda.is_available() and not interpreting():
        print(NO_GPU)
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes, where = _shapes(recipe, args.recipe, device)
    from ..progress import make_console
    from ..run.build import apply_tuned_configs

    console = make_console(wide_tables=True)
    apply_tuned_configs(device, console)  # the configs training would launch
    outcomes = []
    todo = doctor.cases(shapes)
    with console.status("") as status:
        for i, case in enumerate(todo, 1):
            status.update(f"{i}/{len(todo)} {case.family} {case.shape} {case.dtype}")
            repeats = args.repeats if device.type == "cuda" else 0
            outcomes.append(doctor.check(case, device, repeats))
    if args.json:
        cases = [o.to_dict() for o in outcomes]
        print(json.dumps({"device": where, "cases": cases}, indent=2))
    else:
        console.print(_table(outcomes, where))
    return 0 if all(o.passed for o in outcomes) else 1


def _shapes(recipe, name: str, device):
    """The recipe's shapes on a GPU (its corpus's vocabulary when the corpus is on this
    machine), the small ones under the interpreter; and the device's description."""
    from ..kernels.guard import device_name
    from ..run.shapes import recipe_vocabulary, shapes_from_recipe
    from ..tune import doctor

    if device.type != "cuda":
        return doctor.SMALL, f"{device_name(device)}, small shapes"
    try:
        vocab = recipe_vocabulary(recipe)
    except UserError:
        vocab = None  # the corpus is not here: the LM head at 10,000 words
    return shapes_from_recipe(recipe, vocab), f"{device_name(device)}, recipe {name}"


def _table(outcomes, where: str):
    from rich.table import Table

    table = Table(title=f"altgrad-doctor: {where}")
    for name in ("family", "shape", "dtype", "verdict", "max error", "allowed", "Triton ms",
                 "PyTorch ms", "x"):  # fmt: skip
        table.add_column(
            name, justify="left" if name in ("family", "shape", "verdict") else "right"
        )

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    for o in outcomes:
        speedup = (o.reference_ms / o.triton_ms) if o.triton_ms and o.reference_ms else None
        verdict = o.verdict if o.passed else f"fallback: {o.error or 'max error in ' + o.worst}"
        table.add_row(o.family, o.shape, o.dtype, verdict, num(o.max_error, ".2g"),
                      num(o.tolerance, "g"), num(o.triton_ms, ".3f"), num(o.reference_ms, ".3f"),
                      num(speedup, ".2f"))  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
