"""Tables and plots from run directories (what ``altgrad-report`` writes).

A run directory is what ``altgrad-train`` leaves: ``metrics.jsonl`` (one line per epoch),
``results.json`` once finished (best validation and test loss), ``recipe.toml``.

Seeds: a run named ``<name>-s<seed>`` (``altgrad-suite`` names them so) is one seed of the
recipe ``<name>``; runs are grouped by that name and every group gets the mean and the
sample standard deviation (n - 1) over its seeds. A name without the suffix is a group of
its own. A run counts once however often it is named (the same folder, or a copy: the
same recipe, ``fingerprint``), and a run whose files cannot be read is left out with a
one-line warning while the others are reported. Word-level corpora are reported in
perplexity, character level (``names.char_level``) in bits per character (loss / ln 2).

The modules, in the order the report is made:

* :mod:`.runs` -- reading: ``read_run``, ``find_runs`` (each run once), ``split_seed``;
* :mod:`.aggregate` -- ``group_runs``, ``mean_std``, the ``--versus`` pairing
  (``parse_versus``, ``versus_pairs``) and the gradient-mode phases (``mode_phases``);
* :mod:`.tables` -- the Markdown tables: results, seed-paired differences, phases;
* :mod:`.plots` -- the PNGs (matplotlib, the optional ``plot`` extra);
* :mod:`.write` -- ``write_report``, the Markdown file with all of them.

This file only re-exports the names the command line, ``altgrad-suite`` and the tests use.
"""

from ..config.names import seeded_name, split_seed
from .aggregate import group_runs, mean_std, mode_phases, parse_versus
from .plots import restart_epochs, synthetic_spans
from .runs import find_runs, read_run
from .tables import markdown_table, paired_table, phase_table
from .write import write_report

__all__ = [
    "find_runs",
    "group_runs",
    "markdown_table",
    "mean_std",
    "mode_phases",
    "paired_table",
    "parse_versus",
    "phase_table",
    "read_run",
    "restart_epochs",
    "seeded_name",
    "split_seed",
    "synthetic_spans",
    "write_report",
]
