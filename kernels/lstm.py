"""LSTM segment: the recurrent part of one LSTM layer over a whole segment.

The input projection for all steps (x @ W_ih^T + b) is one GEMM done by the caller; this
family runs the serial part: gates_t = gx_t + h_{t-1} @ W_hh^T, gate order i, f, g, o
(PyTorch's), c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t).
"""

from __future__ import annotations

import torch

from ._dispatch import use_triton


def lstm_segment_reference(
    gx: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain PyTorch LSTM recurrence. gx: [T, B, 4H]; w_hh: [4H, H]; h0, c0: [B, H].

    Returns (h_seq [T, B, H], h_T [B, H], c_T [B, H]).
    """
    h, c = h0, c0
    hs = []
    for t in range(gx.shape[0]):
        gates = gx[t] + h @ w_hh.t()
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    return torch.stack(hs), h, c


def lstm_segment(
    gx: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LSTM recurrence over a segment; shapes as in ``lstm_segment_reference``."""
    if use_triton(backend, gx, w_hh, h0, c0):
        raise NotImplementedError("Triton LSTM segment kernel not yet built")
    return lstm_segment_reference(gx, w_hh, h0, c0)
