"""How much memory a recipe's training needs at the least, checked before the model is built.

A model that cannot fit (``model.hidden_size=1000000000``) otherwise fails inside the
allocator with a traceback, or on the CPU swaps the machine to a halt first. So ``build``
compares a lower bound on what training holds at once with what the device has, and
refuses with one line only when even the lower bound does not fit: no run that could train
is refused.

The sizes come from the builders (``values.training_shape``), so this module reads no
recipe key. The lower bound, in bytes (B = this rank's batch columns, T = ``bptt.length``, V the
vocabulary, ``a`` the activation dtype's size: 2 for bf16 autocast on CUDA, else 4):

* weights: P parameters x (4 value + 4 gradient + the optimizer's state: 8 for Adam's two
  moments, 4 for SGD with momentum, 0 without);
* one training segment's activations that autograd keeps for the backward pass:
  a x T x B x (E for the embedding output, + per layer 5 x out for an LSTM (its four gates
  and its output) or (gates + 1) x out for a QRNN);
* the LM head (``kernels.linear_cross_entropy``): when the segment's T x B rows fit one
  chunk of the fused head, its logits and their fp32 log-softmax, (a + 4) x T x B x V;
  otherwise one chunk of logits at a time, a x rows x V (``chunk_rows_for``).

Left out, so that the bound stays below the truth: dropout masks and the other
intermediate tensors, the synthesizer, the evaluation pass, the activations' gradients
during the backward pass, and the framework's own overhead. ``tests/run/test_memory.py`` measures a
training step's peak memory against the bound on the CPU.

Available: free memory on the CUDA device (``torch.cuda.mem_get_info``); on the CPU, the
kernel's ``MemAvailable`` plus free swap from ``/proc/meminfo`` (no check where that file
does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.recipe import Recipe
from ..errors import UserError
from ..kernels.linear_ce import chunk_rows_for
from .values import layer_sizes as layer_sizes  # its home before the builders handed it out
from .values import training_shape


def optimizer_state_bytes(name: str, momentum: float) -> int:
    """Bytes of optimizer state per parameter, at the least: Adam's two moments; a momentum
    buffer for any other optimizer (SGD) with momentum."""
    if name == "adam":
        return 8
    return 4 if momentum else 0


@dataclass(frozen=True)
class MemoryEstimate:
    """A lower bound on the memory one rank's training holds at once, in bytes."""

    parameters: int
    weights: int  # parameters, their gradients and the optimizer's state
    activations: int  # what one training segment keeps for its backward pass

    @property
    def total(self) -> int:
        return self.weights + self.activations


def parameter_count(recipe: Recipe, vocab_size: int) -> int:
    """The parameters of the language model the recipe builds (``RNNLanguageModel``)."""
    m = training_shape(recipe)
    sizes = m.layer_sizes
    gates = 3 if m.output_gate else 2
    total = vocab_size * m.emb_size  # embedding (the tied decoder shares it)
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if m.cell == "lstm":
            total += 4 * n_out * (n_in + n_out) + 4 * n_out
        else:
            window = m.window if i == 0 else 1
            total += gates * n_out * window * n_in + gates * n_out
    decoder_weight = 0 if m.tie_weights else vocab_size * sizes[-1]
    return total + decoder_weight + vocab_size


def estimate(
    recipe: Recipe, vocab_size: int, device_type: str, world_size: int = 1
) -> MemoryEstimate:
    """The lower bound of the module docstring for one of ``world_size`` ranks."""
    m = training_shape(recipe)
    p = parameter_count(recipe, vocab_size)
    opt = optimizer_state_bytes(m.optimizer, m.momentum)
    per_layer = 5 if m.cell == "lstm" else (3 if m.output_gate else 2) + 1
    width = m.emb_size + per_layer * sum(m.layer_sizes[1:])  # per token, activation dtype
    tokens = m.bptt * (m.batch_size // world_size)
    a = 2 if device_type == "cuda" and m.dtype == "bfloat16" else 4
    return MemoryEstimate(
        parameters=p,
        weights=p * (8 + opt),
        activations=tokens * a * width + head_bytes(tokens, vocab_size, a, device_type),
    )


def head_bytes(tokens: int, vocab_size: int, a: int, device_type: str) -> int:
    """What the LM head holds at once for a segment of ``tokens`` rows: all the logits and
    their fp32 log-softmax when the rows fit one chunk of the fused head, else one chunk of
    logits (the chunk loop keeps no more)."""
    rows = chunk_rows_for(vocab_size, device_type)
    if tokens <= rows:
        return tokens * vocab_size * (a + 4)
    return rows * vocab_size * a


def available(device: torch.device) -> tuple[int, str] | None:
    """(bytes, where) the run can use on ``device``; None where that cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"{torch.cuda.get_device_name(device)} has free"
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        kib = int(fields["MemAvailable"].split()[0]) + int(
            fields.get("SwapFree", "0 kB").split()[0]
        )
    except (OSError, KeyError, ValueError):
        return None
    return kib * 1024, "this machine has available (RAM and swap)"


def check_memory(
    recipe: Recipe, vocab_size: int, device: torch.device, world_size: int = 1
) -> None:
    """A one-line UserError when even the lower bound exceeds what ``device`` has."""
    have = available(device)
    need = estimate(recipe, vocab_size, device.type, world_size)
    if have is None or need.total <= have[0]:
        return
    optimizer = training_shape(recipe).optimizer
    raise UserError(
        f"the model does not fit: training needs at least {size(need.total)} "
        f"({need.parameters:,} parameters with gradients and {optimizer} state "
        f"{size(need.weights)}, one segment's activations {size(need.activations)}), and "
        f"{have[1]} {size(have[0])}; make model.hidden_size, model.emb_size, model.layers, "
        "data.batch_size or bptt.length smaller"
    )


def size(n: float) -> str:
    """Bytes for people: 512 B, 1.5 GiB, 55.5 EiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} EiB"
