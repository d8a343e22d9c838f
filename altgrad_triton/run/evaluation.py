"""Evaluation: a language model's mean cross-entropy per token over a split.

A function of a model and a token stream, so that anything holding a model can call it
(the trainer after each epoch and for the test, ``altgrad-eval`` and ``load_run`` on a
checkpoint). The state is carried across segments of ``bptt`` tokens, as in training,
without dropout. With a ``PointerCache`` (``pointer.py``) each target's probability mixes the
model's with the continuous cache's; the segment loop is the same.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from .. import data
from ..core.model import RNNLanguageModel, SegmentObjective, autocast
from ..core.pointer import PointerCache
from ..progress import EpochProgress, ProgressOption, open_progress
from . import distributed as ddp

PROGRESS_LINES = 10
"""Plain-text progress lines over one evaluation when stdout is not a terminal."""


@torch.no_grad()
def evaluate(
    model: RNNLanguageModel,
    tokens: torch.Tensor,
    batch_size: int,
    bptt: int,
    *,
    device: torch.device,
    dtype: str = "float32",
    max_segments: int = 0,
    dist: ddp.DistContext = ddp.SINGLE,
    pointer: PointerCache | None = None,
    progress: ProgressOption = False,
    title: str = "evaluating",
) -> float:
    """Mean cross-entropy (nats) per token of ``tokens`` [N], in ``batch_size`` columns.

    ``dtype``: "bfloat16" runs under bf16 autocast on CUDA; ``max_segments`` > 0 stops after
    that many segments. With several ranks and a batch size they divide, each rank evaluates
    its columns of the same batchified split and the sums are all-reduced: the number a single
    process gets. Otherwise (e.g. the usual test batch size 1) every rank evaluates the whole
    split and rank 0's number is broadcast, so all ranks agree exactly. ``pointer``: mix in
    the continuous cache (reset here); ``progress``: show it (``progress.ProgressOption``: a
    bar per segment, under ``title``, or a call ``progress(done, total)``).
    """
    model.eval()
    objective = SegmentObjective(0.0, 0.0, dtype)  # cross-entropy alone
    source = data.batchify(tokens, batch_size)
    shared = dist.enabled and batch_size % dist.world_size == 0
    if shared:
        source = ddp.columns(source, dist)
    source = source.to(device)
    state = model.init_state(source.shape[1], device)
    segments = data.segment_lengths(source.shape[0], bptt, False, None)
    if max_segments:
        segments = segments[:max_segments]
    if pointer is not None:
        pointer.reset()
    total, count = torch.zeros((), device=device, dtype=torch.float64), 0
    every = max(1, len(segments) // PROGRESS_LINES)
    bar = open_progress(progress, EpochProgress, title, len(segments), every)
    started = time.perf_counter()
    with bar or contextlib.nullcontext():
        for done, (start, seq_len) in enumerate(segments, 1):
            inputs, targets = data.get_segment(source, start, seq_len)
            if pointer is None:
                _, out, ce = objective(model, inputs, targets, state, device)
                total += ce.double() * targets.numel()
            else:  # the cache's probabilities under the same autocast as the model's
                with autocast(device, dtype):
                    out = model(inputs, state)
                    total += pointer.token_nll(out, targets).double().sum()
            state = out.state
            count += targets.numel()
            if bar is not None:
                bar.update(done, float(total) / count, count / (time.perf_counter() - started))
    if dist.enabled:
        both = torch.stack([total, total.new_tensor(float(count))])
        (ddp.all_reduce_sum if shared else ddp.broadcast)(both, dist)
        total, count = both[0], int(both[1].item())
    return float(total) / max(count, 1)


@dataclass(frozen=True)
class Evaluation:
    """How a run evaluates (handed out by the builders): ``evaluate`` with the run's segment
    length, compute dtype and cap on segments."""

    bptt: int  # bptt.length
    dtype: str  # run.dtype
    max_segments: int  # run.max_eval_batches: 0 = the whole split

    def __call__(
        self,
        model: RNNLanguageModel,
        tokens: torch.Tensor,
        batch_size: int,
        device: torch.device,
        dist: ddp.DistContext = ddp.SINGLE,
    ) -> float:
        return evaluate(
            model,
            tokens,
            batch_size,
            self.bptt,
            device=device,
            dtype=self.dtype,
            max_segments=self.max_segments,
            dist=dist,
        )
