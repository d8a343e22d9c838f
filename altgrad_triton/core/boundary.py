"""Synthetic gradients at the truncation boundary (DNI): the start / backward / fit algorithm.

For segment k with starting state s_k and final state s_{k+1} (every carried tensor of the
RNN, joined into one vector per batch row):

1. ``start``: s_k becomes a leaf that requires grad; the synthesizer's prediction
   g_hat(s_k) is computed now and kept (with its graph to the synthesizer's weights).
2. the caller runs the segment and computes its loss L_k.
3. ``backward``: real mode backwards L_k; synthetic mode backwards
   ``L_k + scale * <g_hat(s_{k+1}).detach(), s_{k+1}>`` in the same single pass, so the
   segment's weights also receive the predicted gradient from beyond the cut.
4. ``fit``: s_k.grad -- the gradient that reached the start of the segment, bootstrapped
   with g_hat(s_{k+1}) in synthetic mode -- is the regression target for g_hat(s_k);
   the synthesizer takes one step of its own optimizer on the SG loss kernel.

Nothing here knows about language models, nor which synthesizer it trains (``synthesizers.py``
has them): any RNN whose state is a tensor or a tuple of tensors with a batch dimension works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import kernels
from .carry import Carry, State, detach, join_state
from .synthesizers import ConditionedSynthesizer, Synthesizer


@dataclass
class SGStats:
    """How well g_hat(s_k) matched its target at one boundary.

    0-d tensors on the model's device: the trainer reads them in the same single host
    transfer as the segment's loss.
    """

    loss: torch.Tensor
    cos: torch.Tensor  # mean over batch rows of cos(g_hat, target)
    norm_ratio: torch.Tensor  # |g_hat| / |target| over the whole batch


class SyntheticBoundary:
    """Injects synthetic gradients at segment boundaries and trains the synthesizer.

    Use per segment: ``s = boundary.start(s, mode)``; run the RNN from ``s`` to ``final``
    and compute ``loss``; ``boundary.backward(loss, final, mode)``; then
    ``stats = boundary.fit()``; then step the RNN's optimizer. A ``ConditionedSynthesizer``
    also takes the context of each boundary: ``start(s, mode, context=c_k)`` and
    ``backward(loss, final, mode, next_context=c_{k+1})``. ``optimizer=None`` keeps
    the synthesizer frozen (an oracle in tests, or a pre-trained one).
    ``fit_in_real=False`` skips the synthesizer entirely in real mode.

    ``target_scale`` sets the synthesizer's units: it is fitted to ``target_scale`` times
    the gradient and its output is divided by it before injection. The gradient of a
    per-token mean loss is tiny (of order 1/tokens per segment), while Adam moves weights by
    about its learning rate per step whatever the gradient's size; a scale of the tokens
    per segment puts the targets where Adam's step sizes suit them. It changes nothing else.

    Four choices reproduce the authors' code (``synthetic.synthesizer = "authors"`` sets
    them; the defaults are the method as written):

    * ``reduction="sum"``: the regression loss is the sum of squared errors over the
      batch x state elements (mean x their count), not their mean. Adam divides the
      scale out of its steps, except where the gradient is near its eps.
    * ``advance="every_call"``: a recurrent synthesizer's carry also advances at the call
      on s_{k+1} in synthetic mode, so the next boundary's call starts from there; with
      "once" that call reads the carry and drops its own.
    * ``joined``: the indices of the state's tensors that form the joined state (None:
      all). The others are passed on detached: no target, no injection.
    * ``split_target=True``: in synthetic mode the injection is its own backward pass and
      each pass regresses g_hat(s_k) on what it brings, the real part g and the injected
      part j separately: |g_hat - g|^2 + |g_hat - j|^2, whose gradient is that of
      2 |g_hat - (g + j) / 2|^2. One backward pass gives g + j, so it is fitted so.
    """

    def __init__(
        self,
        synthesizer: Synthesizer | ConditionedSynthesizer,
        optimizer: torch.optim.Optimizer | None,
        scale: float,
        *,
        fit_in_real: bool = True,
        batch_dim: int = 0,
        target_scale: float = 1.0,
        backend: str = "auto",
        reduction: str = "mean",
        advance: str = "once",
        joined: Sequence[int] | None = None,
        split_target: bool = False,
    ):
        if reduction not in ("mean", "sum") or advance not in ("once", "every_call"):
            raise ValueError(
                f"reduction must be mean or sum and advance once or every_call, got "
                f"{reduction!r}, {advance!r}"
            )
        self.synthesizer, self.optimizer, self.scale = synthesizer, optimizer, scale
        self.fit_in_real, self.batch_dim, self.backend = fit_in_real, batch_dim, backend
        self.target_scale, self.reduction, self.advance = target_scale, reduction, advance
        self.joined = None if joined is None else tuple(joined)
        self.split_target = split_target
        self.carry: Carry = None
        self._leaf: State = ()
        self._pred: torch.Tensor | None = None
        self._next_carry: Carry = None
        self._mode = "real"

    def _join(self, state: State) -> torch.Tensor:
        """The joined state of the tensors ``joined`` names."""
        picked = state if self.joined is None else tuple(state[i] for i in self.joined)
        return join_state(picked, self.batch_dim)

    def reset(self) -> None:
        """Forget the synthesizer's own carried state (at the start of each epoch)."""
        self.carry = None

    def active(self, mode: str) -> bool:
        return mode == "synthetic" or self.fit_in_real

    def _predict(
        self, s: torch.Tensor, carry: Carry, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, Carry]:
        """g_hat and the synthesizer's next carry; a context goes to a conditioned one."""
        with torch.profiler.record_function("synthesizer: predict"):
            if context is None:
                return self.synthesizer(s, carry)
            return self.synthesizer(s, carry, context)

    def start(
        self, state: State | torch.Tensor, mode: str, context: torch.Tensor | None = None
    ) -> State:
        """Detach the carried state into a leaf that requires grad; keep g_hat(s_k)."""
        state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
        active = self.active(mode)
        self._leaf = tuple(
            t.detach().requires_grad_(active and (self.joined is None or i in self.joined))
            for i, t in enumerate(state)
        )
        self._pred, self._mode = None, mode
        if active:
            s = self._join(self._leaf).detach()
            self._pred, self._next_carry = self._predict(s, self.carry, context)
        return self._leaf

    def backward(
        self,
        loss: torch.Tensor,
        final: State | torch.Tensor,
        mode: str,
        next_context: torch.Tensor | None = None,
    ) -> None:
        """One backward pass: the loss, plus scale * <g_hat(s_{k+1}), s_{k+1}> if synthetic."""
        if mode == "synthetic" and (self.scale > 0 or self.advance == "every_call"):
            final = (final,) if isinstance(final, torch.Tensor) else tuple(final)
            s_next = self._join(final)
            with torch.no_grad():
                g_next, carry = self._predict(s_next.detach(), self._next_carry, next_context)
            if self.advance == "every_call":
                self._next_carry = carry
            g_next = g_next.detach() / self.target_scale
            loss = loss + self.scale * (g_next * s_next).sum()
        loss.backward()

    def _fit_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The SG loss of g_hat(s_k) against s_k.grad, and the synthesizer's step on it."""
        grads = tuple(t.grad if t.grad is not None else torch.zeros_like(t) for t in self._leaf)
        # the loss against target_scale * gradient, its gradient and the telemetry, one pass;
        # split_target fits half the bootstrapped target at twice the weight (see above)
        split = self.split_target and self._mode == "synthetic"
        sg_loss, cos, ratio = kernels.sg_mse_loss_with_stats(
            self._pred,
            self._join(grads),
            target_scale=self.target_scale / 2 if split else self.target_scale,
            backend=self.backend,
        )
        weight = float(self._pred.numel()) if self.reduction == "sum" else 1.0
        weight *= 2 if split else 1
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
            (sg_loss * weight).backward()
            self.optimizer.step()
        return sg_loss, cos, ratio

    def fit(self) -> SGStats | None:
        """Regress g_hat(s_k) on s_k.grad and step the synthesizer; None when inactive.

        The stats compare g_hat with the target it is fitted to (halved under
        ``split_target`` in synthetic mode); the loss is their mean squared error.
        """
        if self._pred is None:
            return None
        with torch.profiler.record_function("synthesizer: fit"):
            sg_loss, cos, ratio = self._fit_step()
        self.carry = detach(self._next_carry)
        self._pred = None
        return SGStats(sg_loss.detach(), cos, ratio)
