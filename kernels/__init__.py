"""Triton kernels and their PyTorch references (installed as ``altgrad_triton.kernels``).

One module per kernel family (``lstm``, grown past one file, is a subpackage with the same
sections); each pairs ``@triton.jit`` kernels with a plain PyTorch reference that is both
the CPU path and the test oracle, and exposes one public function that takes
``backend="auto" | "torch" | "triton"`` (see ``_dispatch``). What several families share
is in ``_common`` (and ``_scan``, the linear-scan combine functions). Nothing here imports
from the rest of the package.

The public functions exported here go through the kernel guard (``guard``): while a run
has one active, a family is checked against its reference on the device the first time it
launches per shape class, and falls back to it if it fails there. With no guard active
they are the family modules' own functions, unchanged.
"""

from . import authors_synth, elementwise, fo_pooling, linear_ce, lstm, sg_loss
from ._dispatch import BACKENDS, interpreting, use_triton
from .authors_synth import authors_gates, authors_scan_reference, linear_scan
from .elementwise import elementwise_qrnn_synth_reference
from .fo_pooling import fo_pool_reference
from .guard import guarded
from .linear_ce import linear_cross_entropy_reference
from .lstm import lstm_segment_reference
from .sg_loss import sg_mse_loss_reference, sg_mse_loss_with_stats_reference

authors_scan = guarded("authors_scan", authors_synth.authors_scan)
elementwise_qrnn_synth = guarded("elementwise", elementwise.elementwise_qrnn_synth)
fo_pool = guarded("fo_pool", fo_pooling.fo_pool)
linear_cross_entropy = guarded("linear_ce", linear_ce.linear_cross_entropy)
lstm_segment = guarded("lstm", lstm.lstm_segment)
sg_mse_loss = guarded("sg_loss", sg_loss.sg_mse_loss)
sg_mse_loss_with_stats = guarded("sg_loss", sg_loss.sg_mse_loss_with_stats)

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
