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
from collections.abc import Sequence
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
    epoch), dropout on its output, and a linear map back to one scalar, zero-initialised
    (``init`` = "uniform": uniform(-0.1, 0.1), as the authors' decoder).
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
        init: str = "zero",
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
        if init == "uniform":  # the authors' decoder; drawn after the cell's weights
            nn.init.uniform_(self.v, -0.1, 0.1, generator=init_generator)
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


def linear_scan(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """c_n = a_n * c_{n-1} + b_n along dim 0 from c_{-1} = c0; a, b: [N, U], c0: [U] -> [N, U].

    Differentiable through autograd, in about 2 sqrt(N) vector steps instead of N: the
    sequence is cut into K chunks of L ~ sqrt(N) steps; every chunk is scanned from zero at
    once (L steps over [K, U]), keeping the running product of its a's; then the chunks'
    starting values follow one another (K steps over [U]). No division by a product, so
    products that underflow to 0 are harmless.
    """
    n, u = a.shape
    size = max(1, math.isqrt(n))  # L
    chunks = -(-n // size)  # K
    pad = chunks * size - n
    if pad:  # identity steps: a = 1, b = 0
        a = torch.cat([a, a.new_ones(pad, u)])
        b = torch.cat([b, b.new_zeros(pad, u)])
    # unbind, not index: the backward of an index writes a zero tensor of the whole input
    a_j, b_j = a.view(chunks, size, u).unbind(1), b.view(chunks, size, u).unbind(1)
    local, prod = [b_j[0]], [a_j[0]]
    for j in range(1, size):
        local.append(a_j[j] * local[-1] + b_j[j])
        prod.append(prod[-1] * a_j[j])
    ends, decays = local[-1].unbind(0), prod[-1].unbind(0)  # each chunk's last step
    starts = [c0.to(local[0].dtype)]
    for k in range(chunks - 1):
        starts.append(decays[k] * starts[-1] + ends[k])
    c = torch.stack(local, 1) + torch.stack(prod, 1) * torch.stack(starts)[:, None]
    return c.reshape(chunks * size, u)[:n]


class AuthorsElementwiseSynthesizer(Synthesizer):
    """The element-wise synthesizer as the authors' code builds it (alternate_sg, sgtype QRNN).

    Every scalar x of the joined state: x * N(1, sigma) noise -> ``encoder`` Linear(1 -> U)
    -> a QRNN layer of U units with an output gate (``gates``: Linear(window * U -> 3U), rows
    z, f, o) -> ``decoder`` Linear(U -> 1). The QRNN layer is pytorch-qrnn's, whose forget
    gate weighs the *new* candidate: c_n = f_n z_n + (1 - f_n) c_{n-1}, h_n = o_n c_n (the
    fo-pool kernels' f is 1 - this f). Zoneout p zeroes f with probability p in training
    (the unit keeps its value; no rescaling) and multiplies it by 1 - p in eval.

    ``sequence``: what the layer's time axis is. "scan" is what their code does: the
    layer reads [seq, batch, feature] and gets the state reshaped to [B*D, 1, 1], so the
    B*D scalars (row-major) are one sequence, each step's window seeing the scalar before
    it, and the carry between calls is the last step's (c, encoded input). "element" is the
    paper's text: each scalar its own sequence, one step per call, carry [B*D, U] each.

    Initialisation as theirs: encoder and decoder weights uniform(-0.1, 0.1) (``init`` =
    "zero" zero-initialises the decoder instead, DNI's convention), zero biases, the gates'
    Linear at PyTorch's default. Their dropout sits between synthesizer layers, so with one
    layer there is none. Runs in PyTorch on every device (``backend`` = "auto" on CUDA
    too): there is no Triton kernel for it. Noise and zoneout masks come from ``generator``,
    initial weights from ``init_generator`` (the global RNG when None).
    """

    def __init__(
        self,
        hidden: int = 50,
        *,
        window: int = 2,
        zoneout: float = 0.1,
        input_noise: float = 0.5,
        init: str = "uniform",
        sequence: str = "scan",
        generator: torch.Generator | None = None,
        init_generator: torch.Generator | None = None,
    ):
        super().__init__()
        if window not in (1, 2) or sequence not in ("element", "scan"):
            raise ValueError(
                f"window must be 1 or 2 and sequence element or scan, got {window}, {sequence}"
            )
        self.hidden, self.window, self.zoneout = hidden, window, zoneout
        self.input_noise, self.sequence, self.generator = input_noise, sequence, generator
        # PyTorch's defaults first, in nn.Linear's order, then the authors' re-draws: the
        # same weights as building these layers from a global RNG seeded like init_generator
        self.encoder = default_linear(1, hidden, init_generator)
        self.gates = default_linear(window * hidden, 3 * hidden, init_generator)
        self.decoder = default_linear(hidden, 1, init_generator)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1, generator=init_generator)
        nn.init.zeros_(self.encoder.bias)
        if init == "uniform":
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1, generator=init_generator)
        else:
            nn.init.zeros_(self.decoder.weight)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, s: torch.Tensor, carry: Carry) -> tuple[torch.Tensor, Carry]:
        x = s.reshape(-1, 1)
        if self.training and self.input_noise > 0:
            x = x * torch.empty_like(x).normal_(1.0, self.input_noise, generator=self.generator)
        e = self.encoder(x)  # [N, U]
        rows = 1 if self.sequence == "scan" else e.shape[0]
        if carry is None:
            zero = e.new_zeros(rows, self.hidden)
            carry = zero if self.window == 1 else (zero, zero.clone())
        c_prev = carry if self.window == 1 else carry[0]
        inp = e
        if self.window == 2:
            e_prev = carry[1]  # the scalar before: the previous step of the same sequence
            if self.sequence == "scan":
                e_prev = torch.cat([e_prev, e[:-1]])
            inp = torch.cat([e, e_prev], dim=1)
        z, f, o = self.gates(inp).chunk(3, dim=1)
        z, f, o = torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o)
        if self.zoneout:
            if self.training:
                keep = torch.empty_like(f).bernoulli_(1 - self.zoneout, generator=self.generator)
                f = f * keep
            else:
                f = f * (1 - self.zoneout)
        if self.sequence == "scan":
            c = linear_scan(1 - f, f * z, c_prev[0])
            last = c[-1:], e[-1:]
        else:
            c = f * z + (1 - f) * c_prev
            last = c, e
        y = self.decoder(o * c).view_as(s)
        return y, last[0] if self.window == 1 else last


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

    Four choices reproduce the authors' code (``synthetic.preset = "authors"``; the
    defaults are the method as written):

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
        synthesizer: Synthesizer,
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

    def fit(self) -> SGStats | None:
        """Regress g_hat(s_k) on s_k.grad and step the synthesizer; None when inactive.

        The stats compare g_hat with the target it is fitted to (halved under
        ``split_target`` in synthetic mode); the loss is their mean squared error.
        """
        if self._pred is None:
            return None
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
        self.carry = detach(self._next_carry)
        self._pred = None
        return SGStats(sg_loss.detach(), cos, ratio)
