"""Benchmarks: each kernel family against the baselines a user would pick instead.

For every family, at the paper's shapes, forward, backward and both, side by side in one
process on one GPU:

* ``fo_pool`` (QRNN fo-pooling, B=20 T=200 H=1550 and 400, fp32 and bf16): ours (Triton),
  the PyTorch reference eager and under ``torch.compile``, a device copy of the same bytes
  per direction, and the bandwidth bound;
* ``sg_loss`` and ``elementwise`` (the synthetic-gradient loss with its telemetry and the
  element-wise QRNN synthesizer, fp32, on the joined state of the WT2 QRNN / LSTM models):
  the same providers (the copy for the SG loss; its rows also count GPU ops per call);
* ``lstm``: ours (``cells.LSTM`` on the Triton segment kernels) vs cuDNN ``nn.LSTM`` as the
  project would otherwise run it (bf16 autocast; one layer per row, and the 3-layer stack),
  cuDNN's best case (single layer, fp16, H=1024: where its persistent algorithm can apply)
  and the PyTorch reference;
* ``e2e``: tokens/s of a slice of training of the WT2 QRNN and LSTM recipes on random tokens
  (WT2's vocabulary size), backend triton vs torch, fp32 and bf16.

Without a usable GPU the command times the PyTorch reference paths on tiny shapes only and
says so: those are CPU reference timings, not GPU figures.

The submodules split the work:

* :mod:`.measure` -- :class:`Env`, :class:`Timer`, :class:`Budget`, :class:`Row`, and
  :func:`measure_case` / :func:`measure_group` with the metrics and ratios;
* :mod:`.families` -- traffic and flop counts, :class:`Shapes` / :func:`plan_shapes`, and
  the per-family groups of providers;
* :mod:`.e2e` -- the end-to-end training slices (:class:`TrainSlice`);
* :mod:`.output` -- tables, the CSV and :class:`Report`;
* :mod:`.command` -- :func:`run`, the body of ``altgrad-bench``, and :func:`run_families`.
"""

from ..config.names import BENCH_FAMILIES
from .command import CPU_BANNER, DEFAULT_CSV, TITLES, run, run_families
from .e2e import CPU_TINY_OVERRIDES, LSTM_RECIPE, QRNN_RECIPE, TrainSlice, e2e_rows, train_slice
from .families import (
    Shapes,
    authors_scan_bytes,
    authors_scan_groups,
    elementwise_bytes,
    elementwise_groups,
    fo_pool_bytes,
    fo_pool_group,
    fo_pool_groups,
    forward_backward,
    linear_ce_groups,
    lstm_flops,
    lstm_groups,
    plan_shapes,
    sg_loss_bytes,
    sg_loss_groups,
)
from .measure import (
    QUICK_BUDGET_S,
    Budget,
    Env,
    Group,
    Row,
    Timer,
    add_metrics,
    copy_bandwidth,
    free_memory,
    measure_group,
)
from .output import CSV_COLUMNS, Report, append_csv, check_csv

__all__ = [
    "BENCH_FAMILIES",
    "CPU_BANNER",
    "CPU_TINY_OVERRIDES",
    "CSV_COLUMNS",
    "DEFAULT_CSV",
    "LSTM_RECIPE",
    "QRNN_RECIPE",
    "QUICK_BUDGET_S",
    "TITLES",
    "Budget",
    "Env",
    "Group",
    "Report",
    "Row",
    "Shapes",
    "Timer",
    "TrainSlice",
    "add_metrics",
    "append_csv",
    "authors_scan_bytes",
    "authors_scan_groups",
    "check_csv",
    "copy_bandwidth",
    "e2e_rows",
    "elementwise_bytes",
    "elementwise_groups",
    "fo_pool_bytes",
    "fo_pool_group",
    "fo_pool_groups",
    "forward_backward",
    "linear_ce_groups",
    "free_memory",
    "lstm_flops",
    "lstm_groups",
    "measure_group",
    "plan_shapes",
    "run",
    "run_families",
    "sg_loss_bytes",
    "sg_loss_groups",
    "train_slice",
]
