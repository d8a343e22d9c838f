"""Names the command line shares with the packages behind it, in a module that imports
nothing: ``altgrad-bench --help`` and its argument errors stay fast (no torch import), and
there is one list, not a copy per side. ``altgrad-report`` and ``altgrad-suite`` ask
``char_level`` here for the same reason."""

import re

BENCH_FAMILIES = (
    "fo_pool", "sg_loss", "elementwise", "lstm", "linear_ce", "authors_scan", "e2e",
)  # fmt: skip
"""What ``altgrad-bench --families`` chooses from, in the order the tables come."""

CHAR_CORPORA = ("chars",)
"""The ``data.corpus`` names read character by character; every other corpus is words."""


def char_level(corpus: str) -> bool:
    """Whether the corpus named ``corpus`` is character-level: its tokens are characters and
    it is reported in bits per character, not perplexity. The one rule the corpus loader,
    training, inference and the report all ask."""
    return corpus in CHAR_CORPORA


SEED_SUFFIX = re.compile(r"^(?P<name>.+)-s(?P<seed>\d+)$")


def split_seed(run_name: str) -> tuple[str, int | None]:
    """``"wt2-bptt-s3"`` -> ``("wt2-bptt", 3)``; a name without ``-s<seed>`` -> (name, None)."""
    m = SEED_SUFFIX.match(run_name)
    return (m["name"], int(m["seed"])) if m else (run_name, None)


def seeded_name(name: str, seed: int) -> str:
    """The run name of one seed of a recipe (the inverse of :func:`split_seed`)."""
    return f"{name}-s{seed}"
