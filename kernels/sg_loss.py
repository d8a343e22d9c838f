"""Synthetic-gradient regression loss: mean((g_hat - target)^2) and its gradient."""

from __future__ import annotations

import torch

from ._dispatch import use_triton


def sg_mse_loss_reference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in fp32; ``target`` receives no gradient. Returns a 0-d fp32 tensor."""
    return (pred.float() - target.detach().float()).pow(2).mean()


def sg_mse_loss(pred: torch.Tensor, target: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """SG regression loss, differentiable in ``pred``. pred, target: same shape, any layout."""
    if use_triton(backend, pred, target):
        raise NotImplementedError("Triton SG loss kernel not yet built")
    return sg_mse_loss_reference(pred, target)
