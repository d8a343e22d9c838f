"""The LSTM segment in plain PyTorch: the CPU path of ``lstm_segment`` and the oracle the
Triton path is tested against.

A file of its own so that the recurrence the kernels must match reads in a dozen lines,
with nothing of Triton around it.
"""

from __future__ import annotations

import torch


def lstm_segment_reference(
    gx: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain PyTorch LSTM recurrence. gx: [T, B, 4H]; w_hh: [4H, H]; h0, c0: [B, H].

    Returns (h_seq [T, B, H], h_T [B, H], c_T [B, H]): h in gx's dtype, c in c0's when
    that is wider (an fp32 c0 keeps the cell state in fp32 under bf16 storage).
    """
    h, c = h0, c0
    hs = []
    for t in range(gx.shape[0]):
        gates = gx[t] + h @ w_hh.t()
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = (torch.sigmoid(o) * torch.tanh(c)).to(gx.dtype)
        hs.append(h)
    return torch.stack(hs), h, c
