"""NT-ASGD, AWD-LSTM's optimizer: SGD until validation stops improving, then averaged SGD.

Merity et al. (2017) train with plain SGD and, once the validation loss of an epoch is worse
than the best of the epochs before the last ``nonmono`` ones, switch to averaged SGD
(``torch.optim.ASGD`` with ``t0 = 0`` and ``lambd = 0``: the same steps as SGD, plus a
running mean of every iterate since the switch). What the averaging is for is the mean: a
model is evaluated, checkpointed as best and tested with the averaged weights, while
training continues from the last iterate. AWD's fine-tuning stage runs averaged SGD from the
first epoch, from a trained model, and stops at the same non-monotone criterion.

This module holds the pieces; the trainer calls them after each validation
(``Trainer.after_validation``) and around evaluation and checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def nonmonotonic(val_losses: list[float], nonmono: int) -> bool:
    """AWD-LSTM's trigger: is the last validation loss worse than the best of the epochs
    before the last ``nonmono`` ones? ``val_losses``: one per epoch, the latest last.

    Needs more than ``nonmono`` earlier epochs, so it never fires in the first
    ``nonmono + 1`` epochs.
    """
    if len(val_losses) <= nonmono + 1:
        return False
    *earlier, last = val_losses
    return last > min(earlier[:-nonmono])


def averaging_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.ASGD:
    """Averaged SGD over ``optimizer``'s parameters, at its learning rate and weight decay.

    AWD's settings: ``t0 = 0`` (average from the first averaged step), ``lambd = 0`` (no
    decay of the step size), so each step is the SGD step and ``ax`` is the running mean.
    """
    group = optimizer.param_groups[0]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # capturable on CUDA: the step counts stay on the device, no host sync per parameter
    return torch.optim.ASGD(
        params,
        lr=group["lr"],
        t0=0,
        lambd=0.0,
        weight_decay=group["weight_decay"],
        capturable=params[0].is_cuda,
    )


def averages(optimizer: torch.optim.Optimizer) -> dict[nn.Parameter, torch.Tensor] | None:
    """Each parameter's running average (ASGD's ``ax``), or None for an optimizer that does
    not average. A parameter not stepped yet (just after the switch) is its own average."""
    if not isinstance(optimizer, torch.optim.ASGD):
        return None
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            out[p] = state["ax"] if "ax" in state else p.detach()
    return out


@contextlib.contextmanager
def averaged_weights(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> Iterator[dict[str, torch.Tensor] | None]:
    """Inside, ``model`` holds the optimizer's averaged weights; after, its training iterate.

    Yields the iterate's state dict for a checkpoint to keep, so that a resumed
    run continues from the iterate and not from the mean. With an optimizer that does not
    average, nothing changes and it yields None.
    """
    avg = averages(optimizer)
    if avg is None:
        yield None
        return
    iterate = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p, a in avg.items():
            p.copy_(a)
    try:
        yield iterate
    finally:
        model.load_state_dict(iterate)
