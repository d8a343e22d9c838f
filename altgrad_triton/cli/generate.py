"""altgrad-generate: sample text from a trained run, printed as it comes.

    altgrad-generate runs/wt2-small --words 100 --seed 1
    altgrad-generate runs/wt2-small --prompt "The film" --temperature 0.8

The prompt is printed first, then the sampled continuation (a word-level model's <eos> is a
line break). Prompt words outside the vocabulary are listed on stderr and fed as <unk>. The
same seed gives the same text on the same device; lower temperatures pick likelier words.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TextIO

from ..run.checkpoint import layout
from .common import command_parser, run_main
from .eval import backend_choices, load


def parser() -> argparse.ArgumentParser:
    p = command_parser("altgrad-generate", __doc__)
    p.add_argument("run_dir", help="a run directory written by altgrad-train")
    p.add_argument("--checkpoint", choices=layout.TAGS, default="best")
    p.add_argument(
        "--words", type=int, default=100, help="tokens to sample, up to 1,000,000 (default 100)"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="default 1.0")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--prompt", default="", metavar="TEXT", help="text to continue")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--backend", choices=backend_choices(), help="kernels (default: the run's)")
    return p


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..data import EOS  # torch imported once the arguments are good
    from ..errors import UserError
    from ..run.inference import MAX_WORDS

    if not 0 <= args.words <= MAX_WORDS:  # before the model is read
        raise UserError(f"--words: must be from 0 to {MAX_WORDS:,}, got {args.words}")
    run = load(args.run_dir, args.checkpoint, device=args.device, backend=args.backend)
    _, unknown = run.encode_prompt(args.prompt)
    if unknown:
        fed = "fed as <unk>" if run.vocab.unk_index is not None else "left out"
        shown = ", ".join(repr(t) for t in dict.fromkeys(unknown))
        print(f"note: prompt tokens not in the vocabulary, {fed}: {shown}", file=sys.stderr)
    tokens = run.generate(
        args.words, prompt=args.prompt, temperature=args.temperature, seed=args.seed
    )
    if run.char_level:
        write_characters(args.prompt, tokens, sys.stdout)
    else:
        write_words(args.prompt, tokens, sys.stdout, line_break=EOS)
    return 0


def write_words(prompt: str, words: Iterable[str], out: TextIO, line_break: str) -> None:
    """The prompt, then each word as it comes: spaces between words, a new line for the
    ``line_break`` token (``<eos>``)."""
    out.write(prompt)
    line_start = not prompt.strip()
    for word in words:
        if word == line_break:
            out.write("\n")
        else:
            out.write(word if line_start else f" {word}")
        line_start = word == line_break
        out.flush()
    if not line_start:
        out.write("\n")


def write_characters(prompt: str, chars: Iterable[str], out: TextIO) -> None:
    """The prompt, then each character as it comes."""
    out.write(prompt)
    last = prompt[-1:]
    for c in chars:
        out.write(c)
        out.flush()
        last = c
    if last and last != "\n":
        out.write("\n")


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
