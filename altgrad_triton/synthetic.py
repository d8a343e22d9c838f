"""Synthetic gradients at the truncation boundary (DNI), and the synthesizers.

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

The synthesizer's last layer starts at zero, so synthetic mode starts as plain TBPTT.
Nothing here knows about language models: any RNN whose state is a tensor or a tuple of
tensors with a batch dimension works (see ``SyntheticBoundary``).

A synthesizer may also see a *context* per boundary (``ConditionedSynthesizer``): the
DNI paper's cDNI, which conditions on labels. For a language model the context is the
embeddings of the first tokens after the boundary (``context_tokens``), which is what makes
the gradient predictable at all: for a calibrated model the expected gradient of the next
token's loss given the state alone, W^T (p - E[y | s]), is near zero, so a state-only
synthesizer can only fit the model's miscalibration.

The classes take plain arguments (``build.make_synthesizer`` reads a recipe's
``[synthetic]``), and their random numbers come from generators the caller passes:
``init_generator`` for the initial weights, ``generator`` for training noise and dropout
masks (the global RNG when None). The trainer gives both streams of their own, so that a
synthesizer never shifts the model's random numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import kernels
from .carry import Carry, State, detach, join_state


def zero_linear(n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
    """A linear map that starts at zero (built without drawing from any RNG)."""
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, bias=bias)
    for p in layer.parameters():
        nn.init.zeros_(p)
    return layer


def default_linear(n_in: int, n_out: int, init_generator: torch.Generator | None) -> nn.Linear:
    """``nn.Linear(n_in, n_out)`` with PyTorch's default initialisation, U(+-1/sqrt(n_in)) for
    weight and bias, drawn from ``init_generator`` (a CPU generator; the global RNG when None)
    in the order ``nn.Linear`` draws them, so a generator seeded like the global RNG gives the
    same weights."""
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=init_generator)
    bound = 1 / math.sqrt(n_in) if n_in > 0 else 0.0
    nn.init.uniform_(layer.bias, -bound, bound, generator=init_generator)
    return layer


class Synthesizer(nn.Module):
    """Predicts dL_future/ds for a joined state s [B, D].

    ``forward(s, carry) -> (g_hat [B, D], new_carry)``: a synthesizer with a recurrent state
    of its own (the element-wise one) gets it as ``carry`` and returns the next one, so
    the boundary decides when it advances; stateless synthesizers pass ``None`` through.
    """

    def forward(self, s: torch.Tensor, carry: Carry) -> tuple[torch.Tensor, Carry]:
        raise NotImplementedError


class LinearSynthesizer(Synthesizer):
    """g_hat = W s + b, zero-initialised (DNI)."""

    def __init__(self, state_size: int):
        super().__init__()
        self.out = zero_linear(state_size, state_size)

    def forward(self, s: torch.Tensor, carry: Carry) -> tuple[torch.Tensor, Carry]:
        return self.out(s), carry


class GeneratorDropout(nn.Module):
    """Dropout whose masks come from ``generator`` (the global RNG when None).

    A synthesizer draws its noise from a generator of its own, so that training one does not
    shift the model's dropout masks: a synthetic-gradient run then differs from its BPTT
    twin (same seed) only by what the synthetic gradient does.
    """

    def __init__(self, p: float, generator: torch.Generator | None = None):
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        return x * (x.new_empty(x.shape).bernoulli_(keep, generator=self.generator) / keep)


class MLPSynthesizer(Synthesizer):
    """A ReLU MLP on the joined state; the output layer is zero-initialised.

    ``generator``: where its dropout masks come from; ``init_generator``: where its initial
    weights come from (a CPU generator); the global RNG for either when None.
    """

    def __init__(
        self,
        state_size: int,
        hidden: int,
        layers: int,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
        init_generator: torch.Generator | None = None,
    ):
        super().__init__()
        sizes = [state_size] + [hidden] * layers
        body: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            body += [
                default_linear(a, b, init_generator),
                nn.ReLU(),
                GeneratorDropout(dropout, generator),
            ]
        self.body = nn.Sequential(*body)
        self.out = zero_linear(hidden, state_size)

    def forward(self, s: torch.Tensor, carry: Carry) -> tuple[torch.Tensor, Carry]:
        return self.out(self.body(s)), carry


class ElementwiseSynthesizer(Synthesizer):
    """The authors' synthesizer: every scalar of the state through a tiny recurrent net.

    Each of the B*D scalars is its own input sequence (input size 1, one step per
    boundary), multiplied by N(1, sigma) noise in training, through a QRNN, GRU or LSTM
    cell of ``hidden`` units whose state is the carry (kept across boundaries, reset each
    epoch), dropout on its output, and a zero-initialised linear map back to one scalar.
    The QRNN cell runs as one Triton kernel for all scalars (``kernels.elementwise``).
    Noise and dropout masks come from ``generator`` (see ``GeneratorDropout`` for why), the
    initial weights from ``init_generator`` (a CPU generator); the global RNG when None.
    """

    def __init__(
        self,
        cell: str = "qrnn",
        hidden: int = 50,
        dropout: float = 0.1,
        input_noise: float = 0.5,
        backend: str = "auto",
        generator: torch.Generator | None = None,
        init_generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.generator = generator
        if cell not in ("qrnn", "gru", "lstm"):
            raise ValueError(f"element-wise synthesizer cell must be qrnn, gru or lstm, got {cell}")
        self.cell_kind, self.hidden, self.dropout = cell, hidden, dropout
        self.input_noise, self.backend = input_noise, backend
        if cell == "qrnn":
            bound = 1.0  # fan-in of 1
            w = torch.empty(3, hidden).uniform_(-bound, bound, generator=init_generator)
            self.w = nn.Parameter(w)
            self.b = nn.Parameter(torch.zeros(3, hidden))
        else:
            # built without drawing, then PyTorch's default for RNN cells, U(+-1/sqrt(hidden))
            # for every weight and bias in parameter order, from init_generator
            kind = nn.GRUCell if cell == "gru" else nn.LSTMCell
            self.rnn = nn.utils.skip_init(kind, 1, hidden)
            bound = 1 / math.sqrt(hidden)
            for p in self.rnn.parameters():
                nn.init.uniform_(p, -bound, bound, generator=init_generator)
        self.v = nn.Parameter(torch.zeros(hidden))
        self.b_out = nn.Parameter(torch.zeros(1))

    def _zero_carry(self, n: int, like: torch.Tensor) -> Carry:
        c = like.new_zeros(n, self.hidden)
        return (c, c.clone()) if self.cell_kind == "lstm" else c

    def forward(self, s: torch.Tensor, carry: Carry) -> tuple[torch.Tensor, Carry]:
        x = s.reshape(-1)
        if carry is None:
            carry = self._zero_carry(x.shape[0], x)
        if self.training and self.input_noise > 0:
            x = x * torch.empty_like(x).normal_(1.0, self.input_noise, generator=self.generator)
        mask = None
        if self.training and self.dropout > 0:
            keep = 1.0 - self.dropout
            mask = x.new_empty(x.shape[0], self.hidden)
            mask = mask.bernoulli_(keep, generator=self.generator) / keep
        if self.cell_kind == "qrnn":
            y, c = kernels.elementwise_qrnn_synth(
                x, carry, self.w, self.b, self.v, self.b_out, mask, backend=self.backend
            )
            return y.view_as(s), c
        if self.cell_kind == "gru":
            h = new_carry = self.rnn(x[:, None], carry)
        else:
            new_carry = self.rnn(x[:, None], carry)
            h = new_carry[0]
        if mask is not None:
            h = h * mask
        return (h @ self.v + self.b_out).view_as(s), new_carry


class ConditionedSynthesizer(nn.Module):
    """g_hat = base(s) + U c: any synthesizer plus a zero-initialised linear map of a context.

    ``c`` [B, C] is what the caller knows about the far side of the boundary and the state
    does not (cDNI's labels; for a language model the next tokens' embeddings). The term is
    additive so it works with every base, the element-wise one included, and starts at zero
    like the base's output layer.
    """

    def __init__(self, base: Synthesizer, context_size: int, state_size: int):
        super().__init__()
        self.base = base
        self.context = zero_linear(context_size, state_size, bias=False)

    def forward(
        self, s: torch.Tensor, carry: Carry, context: torch.Tensor
    ) -> tuple[torch.Tensor, Carry]:
        g, carry = self.base(s, carry)
        return g + self.context(context.to(g.dtype)), carry


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
    """

    def __init__(
        self,
        synthesizer: Synthesizer,
        optimizer: torch.optim.Optimizer | None,
        scale: float,
        *,
        fit_in_real: bool = True,
        batch_dim: int = 0,
        target_scale: float = 1.0,
        backend: str = "auto",
    ):
        self.synthesizer, self.optimizer, self.scale = synthesizer, optimizer, scale
        self.fit_in_real, self.batch_dim, self.backend = fit_in_real, batch_dim, backend
        self.target_scale = target_scale
        self.carry: Carry = None
        self._leaf: State = ()
        self._pred: torch.Tensor | None = None
        self._next_carry: Carry = None

    def reset(self) -> None:
        """Forget the synthesizer's own carried state (at the start of each epoch)."""
        self.carry = None

    def active(self, mode: str) -> bool:
        return mode == "synthetic" or self.fit_in_real

    def _predict(
        self, s: torch.Tensor, carry: Carry, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, Carry]:
        """g_hat and the synthesizer's next carry; a context goes to a conditioned one."""
        if context is None:
            return self.synthesizer(s, carry)
        return self.synthesizer(s, carry, context)

    def start(
        self, state: State | torch.Tensor, mode: str, context: torch.Tensor | None = None
    ) -> State:
        """Detach the carried state into a leaf that requires grad; keep g_hat(s_k)."""
        state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
        self._leaf = tuple(t.detach().requires_grad_(self.active(mode)) for t in state)
        self._pred = None
        if self.active(mode):
            s = join_state(self._leaf, self.batch_dim).detach()
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
        if mode == "synthetic" and self.scale > 0:
            final = (final,) if isinstance(final, torch.Tensor) else tuple(final)
            s_next = join_state(final, self.batch_dim)
            with torch.no_grad():
                g_next, _ = self._predict(s_next.detach(), self._next_carry, next_context)
            g_next = g_next.detach() / self.target_scale
            loss = loss + self.scale * (g_next * s_next).sum()
        loss.backward()

    def fit(self) -> SGStats | None:
        """Regress g_hat(s_k) on s_k.grad and step the synthesizer; None when inactive."""
        if self._pred is None:
            return None
        grads = tuple(t.grad if t.grad is not None else torch.zeros_like(t) for t in self._leaf)
        # one pass: the loss against target_scale * gradient, its gradient and the telemetry
        sg_loss, cos, ratio = kernels.sg_mse_loss_with_stats(
            self._pred,
            join_state(grads, self.batch_dim),
            target_scale=self.target_scale,
            backend=self.backend,
        )
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
            sg_loss.backward()
            self.optimizer.step()
        self.carry = detach(self._next_carry)
        self._pred = None
        return SGStats(sg_loss.detach(), cos, ratio)
