"""altgrad-eval: perplexity of a trained run on its test or validation split, or on a text.

    altgrad-eval runs/wt2-small                        # test split, batch size 1 (AWD's protocol)
    altgrad-eval runs/wt2-small --split valid          # at the run's data.eval_batch_size
    altgrad-eval runs/wt2-small --text notes.txt --json
    altgrad-eval runs/wt2-small --pointer              # + continuous cache, AWD's WT2 settings
    altgrad-eval runs/ptb --pointer --window 500 --theta 1.0 --lambda 0.1

The best checkpoint unless --checkpoint last (with NT-ASGD: the averaged weights); a run
stopped inside its first epoch has only the last. A progress bar while it scores (plain
lines when stdout is not a terminal: a paper-size model takes many minutes on a CPU). A text is
tokenised with the run's vocabulary; words outside it are scored as <unk> and listed once.
Character-level runs report bits per character too. --pointer without values uses the
settings AWD-LSTM published for Penn Treebank (ptb runs) or WikiText-2 (all others).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections import Counter
from pathlib import Path
from typing import Any

from ..config import recipe as recipes
from ..run.checkpoint import layout
from .common import command_parser, run_main

UNKNOWN_SHOWN = 8
"""How many distinct unknown words the note names (the most frequent)."""


def parser() -> argparse.ArgumentParser:
    p = command_parser("altgrad-eval", __doc__)
    p.add_argument("run_dir", help="a run directory written by altgrad-train")
    p.add_argument("--checkpoint", choices=layout.TAGS, default="best")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--split", choices=["test", "valid"], help="default: test")
    what.add_argument("--text", metavar="FILE", help="score this text file instead")
    p.add_argument(
        "--batch-size",
        type=int,
        help="columns (default: 1 for test and --text, the run's eval batch size for valid)",
    )
    p.add_argument("--bptt", type=int, help="segment length (default: the run's bptt.length)")
    p.add_argument("--pointer", action="store_true", help="mix in the continuous cache")
    p.add_argument("--window", type=int, help="cache: past steps it holds (implies --pointer)")
    p.add_argument("--theta", type=float, help="cache: attention sharpness (implies --pointer)")
    p.add_argument(
        "--lambda", dest="lam", type=float, help="cache: its weight in the mix (implies --pointer)"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--backend", choices=backend_choices(), help="kernels (default: the run's)")
    p.add_argument("--json", action="store_true", help="print one JSON object, no table")
    return p


def backend_choices() -> list[str]:
    """The recipe's ``run.backend`` values, read without importing torch."""
    return list(typing.get_args(typing.get_type_hints(recipes.RunConfig)["backend"]))


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from rich.console import Console  # torch and rich imported once the arguments are good

    from ..progress import make_console

    run = load(args.run_dir, args.checkpoint, device=args.device, backend=args.backend)
    tokens, source, unknown = _tokens(run, args)
    if unknown:
        print(_unknown_note(unknown), file=sys.stderr)
    pointer = _pointer(run, args)
    console = Console(stderr=True, highlight=False) if args.json else make_console()
    batch_size = args.batch_size
    if batch_size is None:
        batch_size = run.values.eval_batch_size if source == "valid split" else 1
    score = run.score(
        tokens,
        batch_size=batch_size,
        bptt=args.bptt,
        pointer=pointer,
        progress=console,
        title=f"{source}, batch {batch_size}",
    )
    inside = run.stopped_inside  # (epoch, segment) of a stop inside an epoch
    report = {
        "run": str(run.run_dir),
        "checkpoint": run.checkpoint,
        "epoch": run.epoch,
        "stopped_inside": None if inside is None else {"epoch": inside[0], "segment": inside[1]},
        "on": source,
        "unknown_tokens": sum(unknown.values()),
        **score.to_dict(),
    }
    if args.json:
        print(json.dumps(report))
    else:
        console.print(_table(report, run.made), markup=False)
    return 0


def load(run_dir: str, tag: str, **options: Any) -> Any:
    """``inference.load_run``; a run without the checkpoint asked for says how to read the
    one it holds in a command's words (``--checkpoint last``). altgrad-generate and
    altgrad-probe read their run here too."""
    from ..run.checkpoint.checkpointer import MissingCheckpoint
    from ..run.inference import load_run

    try:
        return load_run(run_dir, tag, **options)
    except MissingCheckpoint as e:
        raise e.picked_by(lambda held: f"--checkpoint {held}") from None


def _tokens(run: Any, args: argparse.Namespace) -> tuple[Any, str, Counter]:
    """The ids to score, what they are, and the words that became <unk>."""
    if args.text is not None:
        ids, unknown = run.encode_file(Path(args.text))
        return ids, args.text, unknown
    split = args.split or "test"
    return run.split(split), f"{split} split", Counter()


def _unknown_note(unknown: Counter) -> str:
    top = ", ".join(f"{w!r} x{n}" for w, n in unknown.most_common(UNKNOWN_SHOWN))
    more = f", and {len(unknown) - UNKNOWN_SHOWN} more" if len(unknown) > UNKNOWN_SHOWN else ""
    return (
        f"note: {len(unknown)} distinct tokens not in the vocabulary were scored as <unk> "
        f"({sum(unknown.values())} in all): {top}{more}"
    )


def _pointer(run: Any, args: argparse.Namespace) -> Any:
    """The cache's settings: AWD's published ones for the run's corpus, then the options."""
    given = {"window": args.window, "theta": args.theta, "lam": args.lam}
    if not args.pointer and all(v is None for v in given.values()):
        return None
    from ..core.pointer import published_settings

    default = published_settings(run.values.corpus)
    return dataclasses.replace(default, **{k: v for k, v in given.items() if v is not None})


def _table(report: dict, made: str) -> Any:
    """The report as a table; ``made``: where in training the checkpoint was saved."""
    from ..progress import summary_table

    p = report["pointer"]
    rows = [
        ("on", report["on"]),
        ("checkpoint", f"{report['checkpoint']} ({made})"),
        ("tokens scored", f"{report['tokens']:,}"),
        ("batch size / bptt", f"{report['batch_size']} / {report['bptt']}"),
        ("loss (nats/token)", f"{report['loss']:.4f}"),
        ("perplexity", f"{report['ppl']:.2f}"),
    ]
    if "bpc" in report:
        rows.append(("bits per character", f"{report['bpc']:.4f}"))
    if report["unknown_tokens"]:
        rows.append(("scored as <unk>", f"{report['unknown_tokens']:,}"))
    if p is not None:
        rows.append(
            ("pointer cache", f"window {p['window']}, theta {p['theta']}, lambda {p['lam']}")
        )
    return summary_table(f"altgrad-eval: {report['run']}", rows)


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
