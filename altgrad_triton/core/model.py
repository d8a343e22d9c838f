"""The AWD-style recurrent language model: embedding, stacked cells, dropouts, tied decoder.

The recurrent state is a flat tuple of tensors (every layer's carried tensors, in layer
order; ``carry.State``), so the synthetic-gradient boundary can treat it as one vector per
batch row without knowing which cell produced it. The model takes plain arguments; a
recipe becomes one in ``build.build_model``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..kernels import linear_cross_entropy
from .carry import State
from .cells import LSTM, QRNN


@dataclass(frozen=True)
class Dropouts:
    """AWD-LSTM's dropout probabilities; 0 turns one off."""

    input: float = 0.0  # locked dropout on the embedding output
    hidden: float = 0.0  # locked dropout between layers
    output: float = 0.0  # locked dropout on the last layer's output
    embedding: float = 0.0  # whole words dropped from the embedding
    weight: float = 0.0  # DropConnect on the recurrent weights


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout: one mask per sequence, shared across time. x: [T, B, D]."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedding_dropout(
    embed: nn.Embedding, words: torch.Tensor, p: float, training: bool
) -> torch.Tensor:
    """Drop whole words: zero rows of the embedding matrix for this forward pass."""
    weight = embed.weight
    if training and p > 0:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return F.embedding(words, weight)


class LMOutput:
    """One segment's output. The logits [T, B, V] are computed only when read (the
    pointer cache, sampling): the training and evaluation loss, :meth:`cross_entropy`, goes
    through the fused head (``kernels.linear_cross_entropy``) and never builds them."""

    def __init__(
        self,
        logits: torch.Tensor | None,
        last_raw: torch.Tensor,
        last_dropped: torch.Tensor,
        state: State,
        *,
        decoder: nn.Linear | None = None,
        backend: str = "auto",
        chunk_rows: int | None = None,
    ):
        self._logits = logits  # given, or None: decoder(last_dropped) on first read
        self.last_raw = last_raw  # last layer's output before dropout (for TAR)
        self.last_dropped = last_dropped  # after output dropout (for AR); the decoder's input
        self.state = state  # final carried state, same layout as the input state
        self._decoder, self._backend, self._chunk_rows = decoder, backend, chunk_rows

    @property
    def logits(self) -> torch.Tensor:
        """[T, B, V] decoder output (computed once, on first read)."""
        if self._logits is None:
            self._logits = self._decoder(self.last_dropped)
        return self._logits

    def cross_entropy(self, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (0-d fp32) against ``targets`` [T, B]: the fused head, or the
        full logits when they were given or have been read already."""
        if self._logits is not None or self._decoder is None:
            flat = self.logits.reshape(-1, self.logits.shape[-1])
            return F.cross_entropy(flat.float(), targets.reshape(-1))
        h, w, b = self.last_dropped, self._decoder.weight, self._decoder.bias
        h = h.reshape(-1, h.shape[-1])
        device = h.device.type
        if torch.is_autocast_enabled(device):  # the dtype autocast's F.linear would use
            dtype = torch.get_autocast_dtype(device)
        else:
            dtype = torch.promote_types(h.dtype, w.dtype)
        h, w, b = (None if x is None else x.to(dtype) for x in (h, w, b))
        with torch.profiler.record_function("lm_head: linear_cross_entropy"):
            return linear_cross_entropy(
                h, w, b, targets.reshape(-1), backend=self._backend, chunk_rows=self._chunk_rows
            )


class RNNLanguageModel(nn.Module):
    """Stacked QRNN or LSTM language model with AWD-LSTM's regularisation.

    ``layers`` recurrent layers of ``hidden_size`` units, the last of ``emb_size`` when the
    decoder is tied to the embedding; ``window`` is the first QRNN layer's convolution
    window (1 above it). ``backend`` runs the cells and the fused LM head (loss without
    the logits); ``head_chunk_rows`` sets the head's rows per chunk (None: sized to the
    vocabulary, ``kernels.linear_ce.chunk_rows_for``).
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        cell: str,
        emb_size: int,
        hidden_size: int,
        layers: int,
        tie_weights: bool = True,
        window: int = 1,
        output_gate: bool = True,
        dropout: Dropouts = Dropouts(),
        backend: str = "auto",
        head_chunk_rows: int | None = None,
    ):
        super().__init__()
        self.backend, self.head_chunk_rows = backend, head_chunk_rows
        if cell not in ("qrnn", "lstm"):
            raise ValueError(f"cell must be qrnn or lstm, got {cell!r}")
        self.dropouts = dropout
        self.embedding = nn.Embedding(vocab_size, emb_size)
        sizes = [emb_size] + [hidden_size] * (layers - 1)
        sizes.append(emb_size if tie_weights else hidden_size)
        wd = dropout.weight
        stack: list[nn.Module] = []
        for i in range(layers):
            if cell == "qrnn":
                stack.append(
                    QRNN(
                        sizes[i],
                        sizes[i + 1],
                        window=window if i == 0 else 1,
                        output_gate=output_gate,
                        weight_drop=wd,
                        backend=backend,
                    )
                )
            else:
                stack.append(LSTM(sizes[i], sizes[i + 1], weight_drop=wd, backend=backend))
        self.layers = nn.ModuleList(stack)
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        self._state_sizes = [len(layer.init_state(1)) for layer in self.layers]

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """Zero state for ``batch_size`` rows, as a flat tuple."""
        return tuple(t for layer in self.layers for t in layer.init_state(batch_size, device))

    def recurrent_state_indices(self) -> tuple[int, ...]:
        """Where the recurrent states sit in the flat state: every tensor but a window-2
        QRNN layer's carried last input (x_last, the second of its pair)."""
        out, i = [], 0
        for layer, n in zip(self.layers, self._state_sizes, strict=True):
            skip = i + 1 if isinstance(layer, QRNN) and layer.window == 2 else None
            out += [j for j in range(i, i + n) if j != skip]
            i += n
        return tuple(out)

    def _split(self, state: State) -> list[State]:
        out, i = [], 0
        for n in self._state_sizes:
            out.append(tuple(state[i : i + n]))
            i += n
        return out

    def forward(self, tokens: torch.Tensor, state: State) -> LMOutput:
        """tokens: [T, B] word ids; state: flat tuple from ``init_state`` or a previous call."""
        d = self.dropouts
        x = embedding_dropout(self.embedding, tokens, d.embedding, self.training)
        x = locked_dropout(x, d.input, self.training)
        new_state: list[torch.Tensor] = []
        raw = x
        for i, (layer, s) in enumerate(zip(self.layers, self._split(state), strict=True)):
            raw, s_new = layer(x, s)
            new_state.extend(s_new)
            last = i == len(self.layers) - 1
            x = locked_dropout(raw, d.output if last else d.hidden, self.training)
        return LMOutput(
            None, raw, x, tuple(new_state),
            decoder=self.decoder, backend=self.backend, chunk_rows=self.head_chunk_rows,
        )  # fmt: skip


def lm_loss(
    out: LMOutput, targets: torch.Tensor, ar_alpha: float = 0.0, tar_beta: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(training loss with AR/TAR, plain cross-entropy) for one segment; targets: [T, B]."""
    ce = out.cross_entropy(targets)
    loss = ce
    if ar_alpha:
        loss = loss + ar_alpha * out.last_dropped.float().pow(2).mean()
    if tar_beta and out.last_raw.shape[0] > 1:
        loss = loss + tar_beta * (out.last_raw[1:] - out.last_raw[:-1]).float().pow(2).mean()
    return loss, ce


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """The context a model runs in for compute dtype ``dtype`` ("float32" or "bfloat16"):
    bf16 autocast on CUDA, a no-op otherwise (the CPU always computes in float32)."""
    enabled = device.type == "cuda" and dtype == "bfloat16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@dataclass(frozen=True)
class SegmentObjective:
    """One segment's forward pass and loss: ``(loss, output, cross-entropy)``; the loss is
    cross-entropy plus AR/TAR under the compute dtype, divided by the ranks whose gradients
    DDP sums. Training, evaluation (no AR/TAR) and the truncation probe all call it."""

    ar_alpha: float  # optim.ar_alpha: activation regularisation
    tar_beta: float  # optim.tar_beta: temporal activation regularisation
    dtype: str  # run.dtype: "float32" or "bfloat16" (autocast on CUDA)
    world_size: int = 1  # ranks whose gradients DDP sums

    def __call__(
        self,
        net: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        state: State,
        device: torch.device,
    ) -> tuple[torch.Tensor, LMOutput, torch.Tensor]:
        with autocast(device, self.dtype):
            out = net(inputs, state)  # the model, or its DDP wrapper
            loss, ce = lm_loss(out, targets, self.ar_alpha, self.tar_beta)
        if self.world_size > 1:  # this rank's share of the global mean
            loss = loss / self.world_size
        return loss, out, ce

    def for_step(
        self, net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device
    ) -> Callable[[State], tuple[torch.Tensor, State, torch.Tensor]]:
        """The segment as ``tbptt.segment_step``'s ``forward(state) -> (loss, final state,
        cross-entropy)``."""

        def forward(state: State) -> tuple[torch.Tensor, State, torch.Tensor]:
            loss, out, ce = self(net, inputs, targets, state, device)
            return loss, out.state, ce

        return forward


def next_tokens_context(
    tokens: torch.Tensor, embedding: torch.Tensor, row: int, n: int
) -> torch.Tensor:
    """The cDNI context of the boundary before ``row`` of ``tokens`` [steps, B].

    The embeddings of the next ``n`` input tokens of each column, [B, n * emb_size],
    detached: what the segment after the boundary will read, the first of them its first
    input and the rest its first targets. Rows past the end of the split repeat the last.
    """
    ids = tokens[row : row + n]  # [<= n, B], a view: no index tensor to build
    if ids.shape[0] < n:
        ids = torch.cat([ids, tokens[-1:].expand(n - ids.shape[0], -1)])
    return rearrange(embedding.detach()[ids], "token batch emb -> batch (token emb)")
