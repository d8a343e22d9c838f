"""What crosses a segment boundary: the model's carried state and a synthesizer's own carry.

Both are kept as plain tensors so that nothing downstream needs to know which cell made
them. The model's state is a flat tuple (every layer's carried tensors, in layer order);
a synthesizer's carry is a tensor, a tuple of tensors (an LSTM cell's ``(h, c)``) or None
before its first step. ``map_carry`` is the one place that walks either shape, so
detaching, moving and splitting them across ranks are one line each.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from einops import rearrange

State = tuple[torch.Tensor, ...]
"""A recurrent model's carried state: every layer's tensors, batch rows first."""

Carry = torch.Tensor | tuple[torch.Tensor, ...] | None
"""A synthesizer's own recurrent state (None before its first step)."""


def map_carry(fn: Callable[[torch.Tensor], torch.Tensor], carry: Carry) -> Carry:
    """``fn`` on a tensor, or on each tensor of a tuple; None stays None."""
    if carry is None:
        return None
    if isinstance(carry, torch.Tensor):
        return fn(carry)
    return tuple(fn(t) for t in carry)


def detach(carry: Carry) -> Carry:
    """The same tensors cut from the graph: the next segment starts a new one."""
    return map_carry(torch.Tensor.detach, carry)


def to_device(carry: Carry, device: torch.device | str) -> Carry:
    return map_carry(lambda t: t.to(device), carry)


def join_state(state: State, batch_dim: int = 0) -> torch.Tensor:
    """Every tensor of the state flattened per batch row and concatenated: [B, D].

    The result is at least float32 (a bf16 state is joined in fp32; a float64 one stays so).
    """
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in state), torch.float32)
    return torch.cat([batch_rows(t, batch_dim).to(dtype) for t in state], dim=1)


def batch_rows(t: torch.Tensor, batch_dim: int = 0) -> torch.Tensor:
    """``t`` as one row per batch entry, [batch, every other axis in order]."""
    axes = [f"a{i}" for i in range(t.dim())]
    axes[batch_dim % t.dim()] = "batch"
    rest = " ".join(a for a in axes if a != "batch")
    return rearrange(t, f"{' '.join(axes)} -> batch ({rest})")
