"""Names the command line shares with the packages behind it, in a module that imports
nothing: ``altgrad-bench --help`` and its argument errors stay fast (no torch import), and
there is one list, not a copy per side."""

BENCH_FAMILIES = (
    "fo_pool", "sg_loss", "elementwise", "lstm", "linear_ce", "authors_scan", "e2e",
)  # fmt: skip
"""What ``altgrad-bench --families`` chooses from, in the order the tables come."""
