"""Triton kernels and their PyTorch references (installed as ``altgrad_triton.kernels``).

One module per kernel family; each pairs ``@triton.jit`` kernels with a plain PyTorch
reference that is both the CPU path and the test oracle, and exposes one public function
that takes ``backend="auto" | "torch" | "triton"`` (see ``_dispatch``). Nothing here
imports from the rest of the package.
"""

from ._dispatch import BACKENDS, interpreting, use_triton
from .authors_synth import (
    authors_gates,
    authors_scan,
    authors_scan_reference,
    linear_scan,
)
from .elementwise import elementwise_qrnn_synth, elementwise_qrnn_synth_reference
from .fo_pooling import fo_pool, fo_pool_reference
from .linear_ce import linear_cross_entropy, linear_cross_entropy_reference
from .lstm import lstm_segment, lstm_segment_reference
from .sg_loss import (
    sg_mse_loss,
    sg_mse_loss_reference,
    sg_mse_loss_with_stats,
    sg_mse_loss_with_stats_reference,
)

__all__ = [
    "BACKENDS",
    "authors_gates",
    "authors_scan",
    "authors_scan_reference",
    "elementwise_qrnn_synth",
    "elementwise_qrnn_synth_reference",
    "fo_pool",
    "fo_pool_reference",
    "interpreting",
    "linear_cross_entropy",
    "linear_cross_entropy_reference",
    "linear_scan",
    "lstm_segment",
    "lstm_segment_reference",
    "sg_mse_loss",
    "sg_mse_loss_reference",
    "sg_mse_loss_with_stats",
    "sg_mse_loss_with_stats_reference",
    "use_triton",
]
