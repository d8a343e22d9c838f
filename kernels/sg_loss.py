"""Synthetic-gradient regression loss in one launch: mean((g_hat - s target)^2), its
gradient, and the fit telemetry.

One kernel does everything ``SyntheticBoundary.fit`` needs from the data: it reads
``pred`` and ``target`` once, scales the target by ``target_scale`` (the synthesizer's
units), writes the unscaled gradient 2 (pred - s target) / N in pred's dtype (the backward
only multiplies it by the upstream scalar), and reduces the squared error and, when asked,
the sums behind the telemetry: per batch row sum p t, sum p^2, sum t^2, for

    sg_cos        = mean over rows of  sum_j p t / (max(|p_row|, eps) max(|t_row|, eps))
    sg_norm_ratio = |p| / max(|t|, eps)   over the whole batch,   eps = 1e-30,

the numbers ``F.cosine_similarity(p, t, dim=1, eps=1e-30).mean()`` and
``p.norm() / t.norm().clamp_min(1e-30)`` give (up to float rounding).

The reduction is one launch and deterministic: programs tile each row in J fixed chunks
(J and the chunk derive from the shape and the device's SM count, never from the tuned
tile), each writes its fp32 partial sums, and the program that draws the last ticket of an
atomic counter (``_common.last_to_arrive``) adds the partials in a fixed order, writes the
loss and the telemetry, and puts the counter back to zero. For a given config the results
are bit-reproducible; a forced config (``tuning.set_override``) pins the tile across
processes too.

Bytes per element, s = storage bytes: read pred and target (2s), write the gradient (s) --
12 B fp32 -- plus 16 B per program. At the synthesizer's sizes (N = 20 x 5450 = 109,000 for
the WT2 QRNN) that is 1.3 MB, 0.4 us of an H100's bandwidth: the op is bound by the launch,
so it is judged by its latency. It used to take two launches for the loss (45 us on an H200,
host side dominating) plus about ten small torch kernels for the scale and the telemetry;
this one is not timed yet on a GPU (``altgrad-bench --families sg_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import arch, tuning
from ._common import check_tensor, last_to_arrive, launch, ticket_counters
from ._dispatch import use_triton

COS_EPS = 1e-30
"""Floor of each norm in the telemetry (the ``eps`` the trainer always used)."""

# --------------------------------------------------------------------------- kernel


@triton.jit
def _row_sums(partial, idx, mask):
    """Per-row sums of a [rows, partials] tile of other programs' partials, read from L2
    (``.cg``: never a stale L1 line; see ``last_to_arrive``)."""
    return tl.sum(tl.load(partial + idx, mask=mask, other=0.0, cache_modifier=".cg"), 1)


@triton.heuristics(
    {
        "STORE_GRAD": lambda a: a["grad"] is not None,
        "STATS": lambda a: a["stats"] is not None,
    }
)
@triton.jit
def _sg_loss_kernel(
    pred,  # [R, D] prediction, row stride srp, unit column stride; fp32/fp16/bf16
    target,  # [R, D] regression target before scaling, row stride srt
    grad,  # [R, D] contiguous output 2 (pred - s target) / N in pred's dtype, or None
    partial,  # [4, R * J] fp32 workspace: per program sum d^2 (and sum pt, pp, tt)
    counter,  # [1] int32 ticket counter: 0 on entry, put back to 0 by the last program
    loss,  # [] fp32 output: sum d^2 / N
    stats,  # [2] fp32 output: mean row cosine, |p| / |t|; or None
    R,  # rows (the batch)
    D,  # elements per row
    J,  # programs per row
    CHUNK,  # elements of a row per program
    srp,
    srt,
    target_scale,  # s: the target is fitted in these units
    STORE_GRAD: tl.constexpr,
    STATS: tl.constexpr,
    BLOCK: tl.constexpr,  # elements per inner tile
    BLOCK_R: tl.constexpr,  # rows per tile of the final reduction
    BLOCK_J: tl.constexpr,  # partials per row per tile of the final reduction
):
    pid = tl.program_id(0)
    P = R * J
    row = pid // J
    start = (pid % J) * CHUNK
    lane = tl.arange(0, BLOCK)
    n = R * D
    two_over_n = 2.0 / n
    acc_dd = tl.zeros([BLOCK], dtype=tl.float32)
    acc_pt = tl.zeros([BLOCK], dtype=tl.float32)
    acc_pp = tl.zeros([BLOCK], dtype=tl.float32)
    acc_tt = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, CHUNK, BLOCK):
        col = start + off + lane
        m = (col < D) & (off + lane < CHUNK)
        p = tl.load(pred + row.to(tl.int64) * srp + col, mask=m, other=0.0).to(tl.float32)
        t = tl.load(target + row.to(tl.int64) * srt + col, mask=m, other=0.0).to(tl.float32)
        t = t * target_scale
        d = p - t
        acc_dd += d * d
        if STORE_GRAD:
            tl.store(
                grad + row.to(tl.int64) * D + col,
                (d * two_over_n).to(grad.dtype.element_ty),
                mask=m,
            )
        if STATS:
            acc_pt += p * t
            acc_pp += p * p
            acc_tt += t * t
    tl.store(partial + pid, tl.sum(acc_dd, axis=0))
    if STATS:
        tl.store(partial + P + pid, tl.sum(acc_pt, axis=0))
        tl.store(partial + 2 * P + pid, tl.sum(acc_pp, axis=0))
        tl.store(partial + 3 * P + pid, tl.sum(acc_tt, axis=0))
    if last_to_arrive(counter, P):
        tl.store(counter, 0)  # every ticket is drawn: ready for the next launch
        # every program's partials, row by row, in a fixed order (deterministic)
        rr = tl.arange(0, BLOCK_R)
        jj = tl.arange(0, BLOCK_J)
        tot_dd = tl.zeros([BLOCK_R], dtype=tl.float32)
        tot_pp = tl.zeros([BLOCK_R], dtype=tl.float32)
        tot_tt = tl.zeros([BLOCK_R], dtype=tl.float32)
        tot_cos = tl.zeros([BLOCK_R], dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):
            rows = r0 + rr
            row_dd = tl.zeros([BLOCK_R], dtype=tl.float32)
            row_pt = tl.zeros([BLOCK_R], dtype=tl.float32)
            row_pp = tl.zeros([BLOCK_R], dtype=tl.float32)
            row_tt = tl.zeros([BLOCK_R], dtype=tl.float32)
            for j0 in range(0, J, BLOCK_J):
                js = j0 + jj
                idx = rows[:, None] * J + js[None, :]
                m = (rows[:, None] < R) & (js[None, :] < J)
                row_dd += _row_sums(partial, idx, m)
                if STATS:
                    row_pt += _row_sums(partial + P, idx, m)
                    row_pp += _row_sums(partial + 2 * P, idx, m)
                    row_tt += _row_sums(partial + 3 * P, idx, m)
            tot_dd += row_dd
            if STATS:
                # as F.cosine_similarity: each row's norm floored at COS_EPS, divided one by one
                norm_p = tl.maximum(tl.sqrt(row_pp), 1e-30)
                norm_t = tl.maximum(tl.sqrt(row_tt), 1e-30)
                tot_cos += tl.where(rows < R, row_pt / norm_p / norm_t, 0.0)
                tot_pp += row_pp
                tot_tt += row_tt
        tl.store(loss, tl.sum(tot_dd, axis=0) / n)
        if STATS:
            tl.store(stats, tl.sum(tot_cos, axis=0) / R)
            norm_t = tl.maximum(tl.sqrt(tl.sum(tot_tt, axis=0)), 1e-30)  # COS_EPS
            tl.store(stats + 1, tl.sqrt(tl.sum(tot_pp, axis=0)) / norm_t)


# --------------------------------------------------------------------------- configs

_CHUNK_ALIGN = 256
"""Each program's slice of a row starts on a multiple of this many elements."""


def configs_sg_loss(target: arch.Where = None) -> list[dict[str, int]]:
    """Candidates for the inner tile on ``target`` (see ``tuning.candidates``): 2 to 16
    elements per thread on 1-4 warps. At the synthesizer's sizes each program's slice of a
    row is 256-512 elements (about two programs per SM), so larger tiles would idle."""
    return tuning.candidates("sg_loss", target)


def _configs(limits: arch.Limits) -> list[dict[str, int]]:
    """The candidates on ``limits``: the same on every supported GPU (a few KB of shared
    memory for the reductions)."""
    out = []
    for block in (256, 512, 1024):
        for warps in (1, 2, 4):
            if 2 <= block // (32 * warps) <= 16:
                out.append({"BLOCK": block, "num_warps": warps, "num_stages": 1})
    return out


def _heuristic(chunk: int) -> dict[str, int]:
    """The single config used under the interpreter (and by the GPU kernel tests)."""
    return {"BLOCK": min(1024, max(16, triton.next_power_of_2(chunk))), "num_warps": 4}


tuning.register("sg_loss", _configs)

_sg_loss_tuned = tuning.DeviceAutotune("sg_loss", _sg_loss_kernel, key=["R", "D"])


# --------------------------------------------------------------------------- launcher


def _check(fn: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    check_tensor(fn, "pred", pred)
    check_tensor(fn, "target", target, shape=pred.shape, device=pred.device, ref="pred")
    n = pred.numel()
    if not 0 < n < 2**31:
        raise ValueError(f"{fn}: pred must have 1 to 2**31 - 1 elements, got {n}")


def _rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` as [rows, D] with unit column stride (a copy only when it has none)."""
    t = t.reshape(rows, -1)
    return t if t.stride(1) == 1 else t.contiguous()


def _programs_per_row(device: torch.device, rows: int, per_row: int) -> int:
    """About two programs per SM in all, each on an aligned slice of a row."""
    j = max(1, tuning.cdiv(tuning.max_programs(device), rows))
    chunk = tuning.round_up(tuning.cdiv(per_row, j), _CHUNK_ALIGN)
    return tuning.cdiv(per_row, chunk)


def sg_loss_forward(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    target_scale: float = 1.0,
    stats: bool = False,
    want_grad: bool,
    programs_per_row: int | None = None,
    meta: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Launch the one-pass kernel. Rows are ``pred.shape[0]`` with ``stats`` (the batch),
    else the whole tensor is one row.

    Returns (loss 0-d fp32, [cos, norm_ratio] fp32 or None unless ``stats``, unscaled grad
    shaped like pred or None unless ``want_grad``). ``programs_per_row`` fixes J (some
    programs may get nothing: the tests use it); ``meta`` forces a config (else registry,
    heuristic, autotune)."""
    fn = "sg_mse_loss_with_stats" if stats else "sg_mse_loss"
    _check(fn, pred, target)
    if stats and pred.dim() != 2:
        raise ValueError(f"{fn}: pred must be [B, D] (a batch of rows), got {tuple(pred.shape)}")
    rows = pred.shape[0] if stats else 1
    per_row = pred.numel() // rows
    p, q = _rows(pred, rows), _rows(target.detach(), rows)
    j = programs_per_row or _programs_per_row(pred.device, rows, per_row)
    chunk = tuning.round_up(tuning.cdiv(per_row, j), _CHUNK_ALIGN)  # slices stay aligned
    dev = pred.device
    partial = torch.empty(4 * rows * j, dtype=torch.float32, device=dev)
    loss = torch.empty((), dtype=torch.float32, device=dev)
    telemetry = torch.empty(2, dtype=torch.float32, device=dev) if stats else None
    grad = torch.empty(pred.shape, dtype=pred.dtype, device=dev) if want_grad else None
    block_j = min(64, triton.next_power_of_2(j))
    block_r = min(max(1, 1024 // block_j), triton.next_power_of_2(rows))
    args = (
        p, q, grad, partial, ticket_counters(dev), loss, telemetry,
        rows, per_row, j, chunk, p.stride(0), q.stride(0), float(target_scale),
    )  # fmt: skip
    launch(
        "sg_loss", _sg_loss_kernel, _sg_loss_tuned(dev),
        key=tuning.make_key(pred.dtype, pred.numel()), heuristic=lambda: _heuristic(chunk),
        grid=lambda m: (rows * j,), args=args, meta=meta, BLOCK_R=block_r, BLOCK_J=block_j,
    )  # fmt: skip
    return loss, telemetry, grad


# --------------------------------------------------------------------------- autograd


class SgLossFunction(torch.autograd.Function):
    """The forward already holds d loss / d pred; the backward scales it. The telemetry
    is a second, non-differentiable output (None when not asked for)."""

    @staticmethod
    def forward(ctx, pred, target, target_scale, stats):
        loss, telemetry, grad = sg_loss_forward(
            pred, target, target_scale=target_scale, stats=stats, want_grad=True
        )
        ctx.save_for_backward(grad)
        if telemetry is None:
            return loss, None
        ctx.mark_non_differentiable(telemetry)
        return loss, telemetry

    @staticmethod
    def backward(ctx, dloss, _dtelemetry):
        (grad,) = ctx.saved_tensors
        # out of place: a retained graph may run this backward again
        return (grad * dloss).to(grad.dtype), None, None, None


def _launch(pred, target, target_scale, stats):
    """(loss, telemetry or None) through autograd when pred needs a gradient."""
    if torch.is_grad_enabled() and pred.requires_grad:
        return SgLossFunction.apply(pred, target, target_scale, stats)
    loss, telemetry, _ = sg_loss_forward(
        pred, target, target_scale=target_scale, stats=stats, want_grad=False
    )
    return loss, telemetry


# --------------------------------------------------------------------------- reference


def sg_mse_loss_reference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in fp32; ``target`` receives no gradient. Returns a 0-d tensor."""
    return (pred.float() - target.detach().float()).pow(2).mean()


def sg_mse_loss_with_stats_reference(
    pred: torch.Tensor, target: torch.Tensor, target_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean((pred - s target)^2), mean row cosine, |pred| / |s target|) in fp32 PyTorch;
    pred [B, D], rows are the batch; only the loss carries a gradient (to pred)."""
    t = target.detach().float() * target_scale
    loss = sg_mse_loss_reference(pred, t)
    with torch.no_grad():
        p = pred.detach().float()
        cos = F.cosine_similarity(p, t, dim=1, eps=COS_EPS).mean()
        ratio = p.norm() / t.norm().clamp_min(COS_EPS)
    return loss, cos, ratio


# --------------------------------------------------------------------------- public


def sg_mse_loss(pred: torch.Tensor, target: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """SG regression loss mean((pred - target)^2), differentiable in ``pred`` only.

    Args:
        pred: the synthesizer's prediction, any shape and layout; fp32, fp16 or bf16.
        target: the gradient that reached the state, pred's shape; fp32, fp16 or bf16
            (may differ from pred's dtype: both are read as fp32).
        backend: "auto" (Triton on CUDA tensors, else the reference), "torch", "triton".

    Returns:
        A 0-d fp32 tensor; its gradient w.r.t. ``pred`` comes back in pred's dtype.

    Raises:
        ValueError: on the Triton path, for mismatched shapes or devices, an unsupported
            dtype, or an empty input.
    """
    if use_triton(backend, pred, target):
        return _launch(pred, target, 1.0, False)[0]
    return sg_mse_loss_reference(pred, target)


def sg_mse_loss_with_stats(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    target_scale: float = 1.0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The synthesizer's fit in one pass: the loss of :func:`sg_mse_loss` against
    ``target_scale * target``, with the telemetry the trainer logs.

    Args:
        pred: [B, D] prediction, a row per batch element; fp32, fp16 or bf16.
        target: [B, D] the gradient that reached the state, before scaling.
        target_scale: the synthesizer's units (``SyntheticBoundary``'s ``target_scale``).
        backend: "auto" (Triton on CUDA tensors, else the reference), "torch", "triton".

    Returns:
        0-d fp32 tensors (loss, sg_cos, sg_norm_ratio): the loss differentiable in ``pred``;
        sg_cos the mean over rows of cos(pred_row, s target_row), sg_norm_ratio
        |pred| / |s target| over the batch (each norm floored at 1e-30).

    Raises:
        ValueError: on the Triton path, for a pred that is not 2-D, mismatched shapes or
            devices, an unsupported dtype, or an empty input.
    """
    if use_triton(backend, pred, target):
        loss, telemetry = _launch(pred, target, float(target_scale), True)
        return loss, telemetry[0], telemetry[1]
    return sg_mse_loss_with_stats_reference(pred, target, target_scale)
