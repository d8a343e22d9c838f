"""The authors' element-wise synthesizer, QRNN cell, one step for every scalar of the state.

Each scalar x_n of the joined state is its own sequence of input size 1 through a tiny
QRNN of U units (window 1): z = tanh(w_z x + b_z), f = sigmoid(w_f x + b_f),
o = sigmoid(w_o x + b_o), c = f*c_prev + (1-f)*z, h = o*c, y = h . v + b_out.
"""

from __future__ import annotations

import torch

from ._dispatch import use_triton


def elementwise_qrnn_synth_reference(
    x: torch.Tensor,
    c_prev: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    v: torch.Tensor,
    b_out: torch.Tensor,
    dropout_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [N]; c_prev: [N, U]; w, b: [3, U] (rows z, f, o); v: [U]; b_out: [1];
    dropout_mask: [N, U] (already scaled by 1/(1-p)) or None, applied to h.

    Returns (y [N], c [N, U]).
    """
    pre = x.float()[:, None, None] * w.float() + b.float()  # [N, 3, U]
    z = torch.tanh(pre[:, 0])
    f = torch.sigmoid(pre[:, 1])
    o = torch.sigmoid(pre[:, 2])
    c = f * c_prev.float() + (1.0 - f) * z
    h = o * c
    if dropout_mask is not None:
        h = h * dropout_mask.float()
    y = h @ v.float() + b_out.float()
    return y.to(x.dtype), c.to(c_prev.dtype)


def elementwise_qrnn_synth(
    x: torch.Tensor,
    c_prev: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    v: torch.Tensor,
    b_out: torch.Tensor,
    dropout_mask: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One element-wise synthesizer step; shapes as in the reference; differentiable in all."""
    if use_triton(backend, x, c_prev, w):
        raise NotImplementedError("Triton element-wise synthesizer kernel not yet built")
    return elementwise_qrnn_synth_reference(x, c_prev, w, b, v, b_out, dropout_mask)
