"""The synthesizers: what predicts dL_future/ds for a joined state s [B, D], and whose each is.

* ``ToolkitElementwiseSynthesizer`` (``synthetic.synthesizer = "toolkit"``, the default):
  this toolkit's; every scalar of the state into a cell of input size 1, one Triton kernel.
* ``AuthorsSynthesizer`` (``"authors"``): the authors' code (alternate_sg) as it runs;
  Linear(1 -> U), a QRNN layer scanned over the scalars, Linear(U -> 1).
* ``MLPSynthesizer`` (``"mlp"``) and ``LinearSynthesizer`` (``"linear"``): DNI's, on the
  whole joined state.
* ``ConditionedSynthesizer`` (``synthetic.context_tokens`` > 0): cDNI's; any of the above
  plus a linear map of a context.

Every output layer starts at zero (unless ``init = "uniform"``, the authors' decoder), so
synthetic mode starts as plain TBPTT. A synthesizer may also see a *context* per boundary
(``ConditionedSynthesizer``): the DNI paper's cDNI, which conditions on labels. For a
language model the context is the embeddings of the first tokens after the boundary, which
is what makes the gradient predictable at all: for a calibrated model the expected gradient
of the next token's loss given the state alone, W^T (p - E[y | s]), is near zero, so a
state-only synthesizer can only fit the model's miscalibration.

The classes take plain arguments (``build.make_synthesizer`` reads a recipe's
``[synthetic]``), and their random numbers come from generators the caller passes:
``init_generator`` for the initial weights, ``generator`` for training noise and dropout
masks (the global RNG when None). The trainer gives both streams of their own, so that a
synthesizer never shifts the model's random numbers. How a synthesizer is trained at the
truncation boundary is ``boundary.py``.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from .. import kernels
from .carry import Carry


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


class ToolkitElementwiseSynthesizer(Synthesizer):
    """This toolkit's element-wise synthesizer (``synthetic.synthesizer = "toolkit"``): the
    paper's idea, every scalar of the state through a tiny recurrent net, built to run as one
    kernel (the authors' code builds it otherwise: ``AuthorsSynthesizer``).

    Each of the B*D scalars is its own input sequence (input size 1, one step per
    boundary), multiplied by N(1, sigma) noise in training, through a QRNN, GRU or LSTM
    cell of ``hidden`` units whose state is the carry (kept across boundaries, reset each
    epoch), dropout on its output, and a linear map back to one scalar, zero-initialised
    (``init`` = "uniform": uniform(-0.1, 0.1), like the authors' decoder).
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
        x = rearrange(s, "batch state -> (batch state)")  # every scalar its own sequence
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
            return _per_row(y, s), c
        step = rearrange(x, "scalar -> scalar 1")  # one step of input size 1
        if self.cell_kind == "gru":
            h = new_carry = self.rnn(step, carry)
        else:
            new_carry = self.rnn(step, carry)
            h = new_carry[0]
        if mask is not None:
            h = h * mask
        return _per_row(h @ self.v + self.b_out, s), new_carry


def _per_row(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One prediction per scalar of ``s`` [B, D], [B*D] or [B*D, 1], back in s's layout."""
    pattern = "(batch state) 1 -> batch state" if y.dim() == 2 else "(batch state) -> batch state"
    return rearrange(y, pattern, batch=s.shape[0])


class AuthorsSynthesizer(Synthesizer):
    """The element-wise synthesizer as the authors' code builds it (alternate_sg, sgtype QRNN;
    ``synthetic.synthesizer = "authors"``, its own settings under ``[synthetic.authors]``).

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
    layer there is none. With ``sequence`` "scan" the layer's scan runs as Triton kernels
    when ``backend`` chooses Triton (``kernels.authors_scan``: a parallel scan over the
    B*D rows, gates, zoneout and o*c fused; the gates' Linear stays a GEMM), else in
    PyTorch (``kernels.linear_scan``); "element" is one step per call, in PyTorch. Noise
    and zoneout masks come from ``generator``, initial weights from ``init_generator``
    (the global RNG when None).
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
        backend: str = "auto",
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
        self.backend = backend
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
        x = rearrange(s, "batch state -> (batch state) 1")  # every scalar, input size 1
        if self.training and self.input_noise > 0:
            x = x * torch.empty_like(x).normal_(1.0, self.input_noise, generator=self.generator)
        e = self.encoder(x)  # [N, U]
        c_prev, inp = self._inputs(e, carry)
        gates = self.gates(inp)
        keep, f_scale = self._zoneout(gates)
        if self.sequence == "scan":
            h, c_last = kernels.authors_scan(
                gates, c_prev[0], keep, f_scale=f_scale, backend=self.backend
            )
            last = rearrange(c_last, "unit -> 1 unit"), e[-1:]
        else:
            z, f, o = kernels.authors_gates(gates, keep, f_scale)
            c = f * z + (1 - f) * c_prev
            h, last = o * c, (c, e)
        y = _per_row(self.decoder(h), s)
        return y, last[0] if self.window == 1 else last

    def _inputs(self, e: torch.Tensor, carry: Carry) -> tuple[torch.Tensor, torch.Tensor]:
        """(the cell state before, the gates' input [N, window * U]) from the encoded
        scalars ``e`` and the carry (zeros when None)."""
        rows = 1 if self.sequence == "scan" else e.shape[0]
        if carry is None:
            zero = e.new_zeros(rows, self.hidden)
            carry = zero if self.window == 1 else (zero, zero.clone())
        c_prev = carry if self.window == 1 else carry[0]
        if self.window == 1:
            return c_prev, e
        e_prev = carry[1]  # the scalar before: the previous step of the same sequence
        if self.sequence == "scan":
            e_prev = torch.cat([e_prev, e[:-1]])
        return c_prev, torch.cat([e, e_prev], dim=1)

    def _zoneout(self, gates: torch.Tensor) -> tuple[torch.Tensor | None, float]:
        """Zoneout on f: a 0/1 keep mask [N, U] in training (no rescaling), the scale
        1 - p in eval; (None, 1.0) without zoneout."""
        if not self.zoneout:
            return None, 1.0
        if not self.training:
            return None, 1 - self.zoneout
        keep = gates.new_empty(gates.shape[0], self.hidden)
        return keep.bernoulli_(1 - self.zoneout, generator=self.generator), 1.0


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
