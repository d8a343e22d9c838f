"""The combine functions of first-order linear scans, shared by the two scan families
(``fo_pooling``: QRNN fo-pooling; ``authors_synth``: the authors' synthesizer's scan).

A step of c_t = a_t c_{t-1} + b_t is the map x -> a x + b; steps compose as (a1, b1) then
(a2, b2) = (a1 a2, a2 b1 + b2), which is associative, so ``tl.associative_scan`` scans a
tile of steps in parallel, forward or reversed. The four-part variant also carries the map
of everything but the last step, which gives c_{t-1} (forward) or w_{t+1} (reversed) from
the same scan without shifting a tile.

A module of its own because both families' kernels call these and neither owns them; the
rest of what kernels share (activations, the last-arriver ticket, launching) is
``_common``'s.
"""

from __future__ import annotations

import triton


@triton.jit
def _compose(a1, b1, a2, b2):
    """Two steps of x -> a x + b, the earlier (a1, b1) applied first."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _compose_keep_prev(a1, b1, p1, q1, a2, b2, p2, q2):
    """Compose two segments of steps, each (a, b) for the whole segment and (p, q) for the
    segment without its last step (a single step's is the identity (1, 0)).

    The segment-without-its-last-step of L then R is L then (R without its last step), so
    this is associative, and an inclusive scan yields at each position both the map up to
    and including it and the map up to the step before: c_t and c_{t-1}, in one scan."""
    return a1 * a2, a2 * b1 + b2, a1 * p2, p2 * b1 + q2
