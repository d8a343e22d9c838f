"""LSTM segment: the recurrent part of one LSTM layer over a whole segment.

The input projection for all steps (x @ W_ih^T + b) is one GEMM done by the caller; this
family runs the serial part: gates_t = gx_t + h_{t-1} @ W_hh^T, gate order i, f, g, o
(PyTorch's), c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t).

One launch per time step, split over K: each program multiplies one tile of W_hh's gate
rows by one K slice of h_{t-1} into an fp32 workspace and takes an atomic ticket; the last
program to arrive sums the slices in a fixed order (bitwise deterministic), applies the
gates and resets its counter, so no program waits for another and the same kernel runs
under the interpreter. The backward is the same over W_hh^T; dW_hh is one GEMM after the
loop. Launch modes: plain, PDL (Hopper), a CUDA graph of up to 16 steps, or both.
docs/kernels.md ("LSTM segment: design") has the memory-visibility argument, the launch
modes, how configs are chosen, the bytes each step moves and what the forward saves.

fp32 is fp32: the fp32 ``tl.dot`` uses TF32 on a GPU only when
``torch.backends.cuda.matmul.allow_tf32`` is True (the switch ``nn.Linear`` follows; off by
default), IEEE fp32 otherwise and always under the interpreter.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import arch, tuning
from ._common import (
    PinningLauncher,
    check_tensor,
    choose_meta,
    gdc_launch_dependents,
    gdc_wait,
    last_to_arrive,
    pdl_unavailable,
    sigmoid,
    tanh,
    ticket_counters,
)
from ._dispatch import interpreting, use_triton

# --------------------------------------------------------------------------- kernels


@triton.heuristics({"STEP_FROM_MEMORY": lambda a: a["step_base"] is not None})
@triton.jit(do_not_specialize=["step", "T", "SPLIT_K", "slice_shift"])
def _lstm_fwd_step_kernel(
    gx_ptr,  # [T, B, 4H] input projections incl. bias (storage dtype)
    w_ptr,  # [4H, ldw] W_hh, columns H.. zero (storage dtype)
    h_ptr,  # [T+1, B, H] h_all: reads row t (= h_{t-1}); last arrivers write row t+1
    c_ptr,  # [T+1, B, H] fp32 c_all, same rows as h_all
    act_ptr,  # [T, B, 4H] fp32 activated gates i, f, g, o (written iff SAVE_ACT)
    part_ptr,  # [>= S, B, 4H] fp32 workspace: the partial product of each K slice
    count_ptr,  # [>= batch blocks * hidden tiles] int32 tickets, zero between launches
    step_base,  # [1] int32 device step index (graph launches), or None
    step,  # this launch's step: t = step (+ step_base[0]); t >= T is a no-op
    T,  # segment length
    B,  # batch size
    H,  # hidden size
    ldw,  # row stride of W_hh (H rounded up to 128)
    SPLIT_K,  # K slices requested (runtime: a tuning choice that needs no recompile)
    slice_shift,  # program s of a tile computes slice (s + shift) % S; no effect on results
    SAVE_ACT: tl.constexpr,  # store the activated gates for the backward
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 ("ieee" or "tf32")
    USE_PDL: tl.constexpr,  # launched with launch_pdl: wait for the previous step first
    STEP_FROM_MEMORY: tl.constexpr,  # step_base given
    BLOCK_B: tl.constexpr,  # batch rows per program (>= 16 for tl.dot)
    BLOCK_H: tl.constexpr,  # hidden units per program (4 * BLOCK_H rows of W_hh)
    BLOCK_K: tl.constexpr,  # reduction chunk over h_{t-1}
):
    pid_h = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_b = tl.program_id(2)
    n_slices = tl.num_programs(1)
    k_slice = tl.cdiv(tl.cdiv(H, SPLIT_K), BLOCK_K) * BLOCK_K
    slice_id = (pid_s + slice_shift) % n_slices
    k_lo = slice_id * k_slice
    k_hi = tl.minimum(k_lo + k_slice, tl.cdiv(H, BLOCK_K) * BLOCK_K)  # <= ldw: no W mask
    # the tile's rows of W_hh, gate-major: r -> gate r // BLOCK_H, unit j = r % BLOCK_H
    r = tl.arange(0, 4 * BLOCK_H)
    unit_r = pid_h * BLOCK_H + r % BLOCK_H
    col_r = (r // BLOCK_H) * H + unit_r  # W_hh row = column of the [B, 4H] gate layouts
    ok_r = unit_r < H
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    ok_b = offs_b < B
    if USE_PDL:
        gdc_wait()  # everything below may read what the previous step wrote
    t = step
    if STEP_FROM_MEMORY:
        t += tl.load(step_base)
    if t < T:
        t64 = t.to(tl.int64)
        BH = B * H
        h_prev = h_ptr + t64 * BH
        acc = tl.zeros([BLOCK_B, 4 * BLOCK_H], dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            hk = tl.load(
                h_prev + offs_b[:, None] * H + offs_k[None, :],
                mask=ok_b[:, None] & (offs_k < H)[None, :],
                other=0.0,
            )
            wk = tl.load(
                w_ptr + col_r[:, None] * ldw + offs_k[None, :], mask=ok_r[:, None], other=0.0
            )
            acc = tl.dot(hk, tl.trans(wk), acc, input_precision=DOT_PREC)
        gate_off = offs_b[:, None] * (4 * H) + col_r[None, :]
        tl.store(part_ptr + slice_id * (4 * BH) + gate_off, acc, mask=ok_b[:, None] & ok_r[None, :])
        counter = count_ptr + pid_b * tl.num_programs(0) + pid_h
        last = last_to_arrive(counter, n_slices)  # publishes the partial (module docstring)
        if USE_PDL:
            gdc_launch_dependents()  # the next step may be scheduled; it waits in gdc_wait
        if last:  # the last arriver of this tile: the gates
            tl.debug_barrier()  # explicit: every thread past the acquire before reading
            offs_j = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
            mask = ok_b[:, None] & (offs_j < H)[None, :]
            off = offs_b[:, None] * (4 * H) + offs_j[None, :]
            pre_i = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
            pre_f = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
            pre_g = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
            pre_o = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
            for s in range(0, n_slices):  # fixed order: the same bits whoever is last
                p = part_ptr + s * (4 * BH) + off
                pre_i += tl.load(p, mask=mask, other=0.0, cache_modifier=".cg")
                pre_f += tl.load(p + H, mask=mask, other=0.0, cache_modifier=".cg")
                pre_g += tl.load(p + 2 * H, mask=mask, other=0.0, cache_modifier=".cg")
                pre_o += tl.load(p + 3 * H, mask=mask, other=0.0, cache_modifier=".cg")
            gx = gx_ptr + t64 * (4 * BH) + off
            i = sigmoid(pre_i + tl.load(gx, mask=mask, other=0.0).to(tl.float32))
            f = sigmoid(pre_f + tl.load(gx + H, mask=mask, other=0.0).to(tl.float32))
            g = tanh(pre_g + tl.load(gx + 2 * H, mask=mask, other=0.0).to(tl.float32))
            o = sigmoid(pre_o + tl.load(gx + 3 * H, mask=mask, other=0.0).to(tl.float32))
            state_off = offs_b[:, None] * H + offs_j[None, :]
            c_prev = tl.load(c_ptr + t64 * BH + state_off, mask=mask, other=0.0)
            c = f * c_prev + i * g
            h = o * tanh(c)
            tl.store(c_ptr + (t64 + 1) * BH + state_off, c, mask=mask)
            tl.store(h_ptr + (t64 + 1) * BH + state_off, h.to(h_ptr.dtype.element_ty), mask=mask)
            if SAVE_ACT:
                act = act_ptr + t64 * (4 * BH) + off
                tl.store(act, i, mask=mask)
                tl.store(act + H, f, mask=mask)
                tl.store(act + 2 * H, g, mask=mask)
                tl.store(act + 3 * H, o, mask=mask)
            tl.store(counter, 0)  # every ticket of this launch is drawn: ready for the next


@triton.heuristics(
    {
        "STEP_FROM_MEMORY": lambda a: a["step_base"] is not None,
        "HAS_DHSEQ": lambda a: a["dhseq_ptr"] is not None,
        "HAS_DHT": lambda a: a["dhT_ptr"] is not None,
    }
)
@triton.jit(do_not_specialize=["step", "T", "SPLIT_K", "slice_shift"])
def _lstm_bwd_step_kernel(
    w_ptr,  # [4H, ldw] W_hh, columns H.. zero (storage dtype)
    act_ptr,  # [T, B, 4H] fp32 activated gates saved by the forward
    c_ptr,  # [T+1, B, H] fp32 c_all saved by the forward (row t+1 = c_t)
    dhseq_ptr,  # [T, B, H] upstream dL/dh_seq, or None (zeros)
    dhT_ptr,  # [B, H] upstream dL/dh_T, or None (zeros)
    dg_ptr,  # [T+1, B, 4H] dgates (storage dtype), row T zero: reads row t+1, writes row t
    dc_ptr,  # [2, B, H] fp32 dL/dc: reads slot (t+1) % 2, writes slot t % 2
    dh0_ptr,  # [B, H] fp32 dL/dh0, written by step t = -1
    part_ptr,  # [>= S, B, H] fp32 workspace: the partial product of each K slice
    count_ptr,  # [>= batch blocks * hidden tiles] int32 tickets, zero between launches
    step_base,  # [1] int32 device step index (graph launches), or None
    step,  # this launch's step: t = step (+ step_base[0]); t < -1 is a no-op
    T,  # segment length
    B,  # batch size
    H,  # hidden size
    ldw,  # row stride of W_hh (H rounded up to 128)
    SPLIT_K,  # slices of the 4H reduction requested (runtime tuning choice)
    slice_shift,  # program s of a tile computes slice (s + shift) % S; no effect on results
    HAS_DHSEQ: tl.constexpr,
    HAS_DHT: tl.constexpr,
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 ("ieee" or "tf32")
    USE_PDL: tl.constexpr,  # launched with launch_pdl: wait for the previous step first
    STEP_FROM_MEMORY: tl.constexpr,  # step_base given
    BLOCK_B: tl.constexpr,  # batch rows per program (>= 16 for tl.dot)
    BLOCK_H: tl.constexpr,  # columns j of W_hh (hidden units of dh) per program
    BLOCK_K: tl.constexpr,  # reduction chunk over the 4H gate gradients
):
    pid_h = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_b = tl.program_id(2)
    n_slices = tl.num_programs(1)
    K = 4 * H
    k_slice = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    slice_id = (pid_s + slice_shift) % n_slices
    k_lo = slice_id * k_slice
    k_hi = tl.minimum(k_lo + k_slice, K)
    offs_j = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)  # < ldw: padded columns are zero
    ok_j = offs_j < H
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    ok_b = offs_b < B
    if USE_PDL:
        gdc_wait()  # everything below may read what the previous step wrote
    t = step
    if STEP_FROM_MEMORY:
        t += tl.load(step_base)
    if t >= -1:
        t64 = t.to(tl.int64)
        BH = B * H
        dg_next = dg_ptr + (t64 + 1) * (4 * BH)
        acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            ok_k = offs_k < K
            dg = tl.load(
                dg_next + offs_b[:, None] * K + offs_k[None, :],
                mask=ok_b[:, None] & ok_k[None, :],
                other=0.0,
            )
            wk = tl.load(
                w_ptr + offs_k[:, None] * ldw + offs_j[None, :], mask=ok_k[:, None], other=0.0
            )
            acc = tl.dot(dg, wk, acc, input_precision=DOT_PREC)
        state_off = offs_b[:, None] * H + offs_j[None, :]
        mask = ok_b[:, None] & ok_j[None, :]
        tl.store(part_ptr + slice_id * BH + state_off, acc, mask=mask)
        counter = count_ptr + pid_b * tl.num_programs(0) + pid_h
        last = last_to_arrive(counter, n_slices)  # publishes the partial (module docstring)
        if USE_PDL:
            gdc_launch_dependents()
        if last:  # the last arriver of this tile: the LSTM backward
            tl.debug_barrier()  # explicit: every thread past the acquire before reading
            dh = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
            for s in range(0, n_slices):  # fixed order: the same bits whoever is last
                dh += tl.load(
                    part_ptr + s * BH + state_off, mask=mask, other=0.0, cache_modifier=".cg"
                )
            if t >= 0:
                if HAS_DHSEQ:
                    dh += tl.load(dhseq_ptr + t64 * BH + state_off, mask=mask, other=0.0).to(
                        tl.float32
                    )
                if HAS_DHT:  # dL/dh_T joins at step T-1 only
                    dh_T = tl.load(dhT_ptr + state_off, mask=mask, other=0.0).to(tl.float32)
                    dh += tl.where(t == T - 1, dh_T, 0.0)
                gate_off = t64 * (4 * BH) + offs_b[:, None] * K + offs_j[None, :]
                act = act_ptr + gate_off
                i = tl.load(act, mask=mask, other=0.0)
                f = tl.load(act + H, mask=mask, other=0.0)
                g = tl.load(act + 2 * H, mask=mask, other=0.0)
                o = tl.load(act + 3 * H, mask=mask, other=0.0)
                c_prev = tl.load(c_ptr + t64 * BH + state_off, mask=mask, other=0.0)
                c = tl.load(c_ptr + (t64 + 1) * BH + state_off, mask=mask, other=0.0)
                tc = tanh(c)
                dc_in = dc_ptr + ((t + 1) % 2) * BH + state_off
                dc = tl.load(dc_in, mask=mask, other=0.0) + dh * o * (1.0 - tc * tc)
                out = dg_ptr + gate_off
                ty = dg_ptr.dtype.element_ty
                tl.store(out, (dc * g * i * (1.0 - i)).to(ty), mask=mask)
                tl.store(out + H, (dc * c_prev * f * (1.0 - f)).to(ty), mask=mask)
                tl.store(out + 2 * H, (dc * i * (1.0 - g * g)).to(ty), mask=mask)
                tl.store(out + 3 * H, (dh * tc * o * (1.0 - o)).to(ty), mask=mask)
                tl.store(dc_ptr + (t % 2) * BH + state_off, dc * f, mask=mask)
            else:
                tl.store(dh0_ptr + state_off, dh, mask=mask)
            tl.store(counter, 0)  # every ticket of this launch is drawn: ready for the next


# --------------------------------------------------------------------------- configs

_FWD, _BWD = "lstm_fwd", "lstm_bwd"  # ``tuning`` kernel names
_TILE_KEYS = ("BLOCK_B", "BLOCK_H", "BLOCK_K")
_META_KEYS = (*_TILE_KEYS, "SPLIT_K")
_LAUNCH_KEYS = ("LAUNCH", "GRAPH_STEPS")  # optional meta keys: how the steps are launched
_MAX_BLOCK = 128  # the largest BLOCK_H / BLOCK_K: W_hh's row stride is H rounded up to it
LAUNCH_MODES = ("plain", "pdl", "graph", "graph-pdl")
"""The ways to launch a segment's steps (module docstring); a meta's ``LAUNCH`` indexes it."""
GRAPH_STEPS = 16
"""Steps per captured CUDA graph in the graph modes, unless a meta's ``GRAPH_STEPS`` says."""


def _block_b(batch: int) -> int:
    """Batch rows per program: the smallest of 16/32/64/128 covering B (tl.dot needs >= 16)."""
    for cand in (16, 32, 64):
        if batch <= cand:
            return cand
    return 128


_VALUES_PER_THREAD = 112  # live fp32 values per thread that fit 255 registers with the rest
_REGISTERS = 255  # what _VALUES_PER_THREAD was measured at (sm_90, Triton 3.9's ptxas)
_SM8X_VALUES_PER_THREAD = 48
"""The same on sm_80/sm_86/sm_89 with Triton 3.9 (and any release but 3.6, unmeasured):
its ptxas for them (CUDA 12.9, ``--regAllocOptLevel=2``) spilled the fp32 (IEEE) step
tiles from 56 values per thread up (24 B to 17 KB; many at 32 registers), where Triton 3.6's
held 112 without a spill. Measured with ``altgrad-tune --check-configs``."""

_SPILLED: arch.Measured = {
    "sm_90": {"3.6": {("fwd", 16, 16, 128, 4, 3)},
              "3.9": {("fwd", 16, 16, 128, 4, 3), ("fwd", 32, 32, 128, 8, 3),
                      ("fwd", 32, 32, 128, 8, 2)}},
}  # fmt: skip
"""(direction, BLOCK_B, BLOCK_H, BLOCK_K, num_warps, num_stages) that spilled within the
budget there: 8 B per thread in fp32 (IEEE) at H=256/400 (``altgrad-tune
--check-configs``); such a tile takes the next warps and stages that fit (``_tile``), or
is not offered (32 x 32 x 128 on sm_90 with Triton 3.9)."""


def _values_budget(limits: arch.Limits) -> int:
    """Live fp32 values per thread a tile may hold on ``limits`` (at 255 registers)."""
    if limits.capability >= (9, 0) or arch.triton_release() == "3.6":
        return _VALUES_PER_THREAD
    return _SM8X_VALUES_PER_THREAD


def _warp_options(block_b: int, block_h: int, gates: int, block_k: int,
                  limits: arch.Limits) -> list[int]:  # fmt: skip
    """Warps (4, 8) that hold a tile's live fp32 values without spilling, fewest first.

    Two peaks, each at most about 112 values per thread (ptxas then fits the tile in 255
    registers with its addresses and masks; 48 on sm_8x with Triton 3.9: _values_budget):
    the K loop holds the accumulator (4 forward, 1 backward [BLOCK_B, BLOCK_H] tiles) plus
    one chunk of both operands, [BLOCK_B, BLOCK_K] and [gates * BLOCK_H, BLOCK_K], in fp32
    (the IEEE dot runs on FMAs from registers); the last arriver's epilogue holds about 14
    [BLOCK_B, BLOCK_H] tiles (the four gate sums, gx, c, the activated gates, the outputs).
    A thread's registers are ``limits``' cap for the block (255 at 4 and 8 warps on every
    supported GPU; 16 warps would cap it at 128, and every such tile spilled).
    ``altgrad-tune --check-configs`` measures it."""
    loop = gates * block_b * block_h + (block_b + gates * block_h) * block_k
    epilogue = 14 * block_b * block_h
    out = []
    for warps in (4, 8):
        budget = _values_budget(limits) * limits.registers_cap(warps) // _REGISTERS
        if max(loop, epilogue) <= budget * 32 * warps:
            out.append(warps)
    return out


def _num_warps(block_b: int, block_h: int, gates: int, block_k: int,
               limits: arch.Limits) -> int | None:  # fmt: skip
    """The fewest warps of :func:`_warp_options`, or None when none holds the tile."""
    return next(iter(_warp_options(block_b, block_h, gates, block_k, limits)), None)


def _stage_bytes(block_b: int, rows: int, block_k: int, stages: int) -> int:
    """Shared memory of a tile's operand buffers: Triton's pipeliner keeps ``stages - 1``
    (at least one) copies of the fp32 [BLOCK_B, BLOCK_K] and [rows, BLOCK_K] chunks (fp32,
    the larger storage dtype; measured for sm_80-sm_90 with Triton 3.6 and 3.9, where
    nothing else in the step kernels outlives them)."""
    return max(stages - 1, 1) * (block_b + rows) * block_k * 4


def _stage_options(block_b: int, rows: int, block_k: int, limits: arch.Limits) -> list[int]:
    """Pipeline stages, 3 and/or 2, whose operand buffers (:func:`_stage_bytes`) fit
    ``limits``' shared memory per block, most first (below 2 no pipelining is left)."""
    return [s for s in (3, 2) if _stage_bytes(block_b, rows, block_k, s) <= limits.shared_per_block]


def _num_stages(block_b: int, rows: int, block_k: int, limits: arch.Limits) -> int | None:
    """The most stages of :func:`_stage_options`, or None when even 2 do not fit."""
    return next(iter(_stage_options(block_b, rows, block_k, limits)), None)


def _tile(bb: int, bh: int, bk: int, gates: int, limits: arch.Limits) -> dict | None:
    """One tile with its warps and stages, or None if it cannot fit ``limits``: the most
    stages that fit, on the fewest warps that hold it, unless measured to spill there
    (``_SPILLED``), then the next (more warps, then fewer stages)."""
    spilled = arch.measured_failures(_SPILLED, limits)
    direction = "fwd" if gates == 4 else "bwd"
    for stages in _stage_options(bb, gates * bh, bk, limits):
        for warps in _warp_options(bb, bh, gates, bk, limits):
            if (direction, bb, bh, bk, warps, stages) not in spilled:
                return {"BLOCK_B": bb, "BLOCK_H": bh, "BLOCK_K": bk, "num_warps": warps,
                        "num_stages": stages}  # fmt: skip
    return None


def _tiles_fwd(limits: arch.Limits) -> list[dict]:
    """Forward tiles: BLOCK_B 16-128 (the launchers keep the one covering B, so a batch block
    reads W_hh once), BLOCK_H 16/32/64 (4x as many rows of W_hh: H=1550 gives 97/49/25
    tiles), BLOCK_K 64/128 and SPLIT_K 1/2/4/8 K slices (H=1550, BLOCK_H=32: 49 to 392
    programs), less the tiles that would spill or overflow ``limits``' shared memory
    (``_tile``). SPLIT_K is a runtime argument: the tiles per BLOCK_B compile to at most 6
    kernels."""
    tiles = [_tile(bb, bh, bk, 4, limits) for bb in (16, 32, 64, 128) for bh in (16, 32, 64)
             for bk in (64, 128)]  # fmt: skip
    return [dict(t, SPLIT_K=sk) for t in tiles if t is not None for sk in (1, 2, 4, 8)]


def _tiles_bwd(limits: arch.Limits) -> list[dict]:
    """Backward tiles: BLOCK_H 32/64/128 columns of W_hh (contiguous: 64-256 B per row),
    BLOCK_K 64/128 gate rows per chunk, SPLIT_K 2/4/8/16 slices of the 4H reduction
    (H=1550, BLOCK_H=64: 50 to 400 programs), less the tiles that cannot fit ``limits``
    (``_tile``); every BLOCK_B keeps at least one tile."""
    tiles = []
    for bb in (16, 32, 64, 128):
        fit = [t for bh in (32, 64, 128) for bk in (64, 128) if (t := _tile(bb, bh, bk, 1, limits))]
        # BLOCK_B=128 fits only 16 columns (its epilogue): those, rather than no tile
        tiles += fit or [t for bk in (64, 128) if (t := _tile(bb, 16, bk, 1, limits))]
    return [dict(t, SPLIT_K=sk) for t in tiles if t is not None for sk in (2, 4, 8, 16)]


_LAUNCH_CHOICES = ({"LAUNCH": 0}, {"LAUNCH": 1}, {"LAUNCH": 2, "GRAPH_STEPS": GRAPH_STEPS},
                   {"LAUNCH": 3, "GRAPH_STEPS": GRAPH_STEPS})  # fmt: skip


def _with_launch_modes(tiles: list[dict]) -> list[dict]:
    return [dict(tile, **mode) for tile in tiles for mode in _LAUNCH_CHOICES]


def configs_lstm_fwd(target: arch.Where = None) -> list[dict]:
    """The forward's ``tuning`` candidates for ``target`` (an architecture such as "sm_86",
    a device; default the present GPU, see ``tuning.candidates``): every tile
    (``_tiles_fwd``) in every launch mode (``LAUNCH`` indexes ``LAUNCH_MODES``).
    ``altgrad-tune`` times whole segments, so the launch mode and the tile are chosen
    together; ``@triton.autotune`` (one step, plain launches) sweeps the tiles only."""
    return tuning.candidates(_FWD, target)


def configs_lstm_bwd(target: arch.Where = None) -> list[dict]:
    """The backward's ``tuning`` candidates for ``target``: every tile (``_tiles_bwd``) in
    every launch mode."""
    return tuning.candidates(_BWD, target)


tuning.register(_FWD, lambda limits: _with_launch_modes(_tiles_fwd(limits)))
tuning.register(_BWD, lambda limits: _with_launch_modes(_tiles_bwd(limits)))


def _heuristic_meta(batch: int) -> dict:
    """The single config used under the interpreter (few, small programs)."""
    return {"BLOCK_B": _block_b(batch), "BLOCK_H": 16, "BLOCK_K": 32, "SPLIT_K": 2,
            "num_warps": 4, "num_stages": 2}  # fmt: skip


def _prune_block_b(configs, named_args, **kwargs):
    """The tiles whose BLOCK_B covers B; all of them where the device has none (sm_8x with
    Triton 3.9 offers BLOCK_B 16 and 32 only: more batch blocks then read W_hh)."""
    want = _block_b(named_args["B"])
    kept = [c for c in configs if c.kwargs["BLOCK_B"] == want]
    return kept or list(configs)


def _step_tiles(metas: list[dict]) -> list[dict]:
    """The candidates as ``@triton.autotune`` takes them: each tile once, without the launch
    modes (not kernel arguments)."""
    return [dict(m) for m in dict.fromkeys(
        tuple(tuning.without_launch_modes(m).items()) for m in metas)]  # fmt: skip


_lstm_fwd_step_tuned = tuning.DeviceAutotune(
    _FWD, _lstm_fwd_step_kernel, _step_tiles, key=["B", "H", "SAVE_ACT"],
    prune_configs_by={"early_config_prune": _prune_block_b},
)  # fmt: skip
_lstm_bwd_step_tuned = tuning.DeviceAutotune(
    _BWD, _lstm_bwd_step_kernel, _step_tiles, key=["B", "H"],
    prune_configs_by={"early_config_prune": _prune_block_b},
)  # fmt: skip


def _as_meta(config) -> dict:
    """A triton.Config or a meta dict (BLOCK_B/H/K, SPLIT_K; optional num_warps,
    num_stages, LAUNCH, GRAPH_STEPS), checked."""
    if isinstance(config, triton.Config):
        meta = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
    else:
        meta = dict(config)
    unknown = set(meta) - {*_META_KEYS, *_LAUNCH_KEYS, "num_warps", "num_stages"}
    missing = set(_META_KEYS) - set(meta)
    if unknown or missing:
        raise ValueError(
            f"meta: needs BLOCK_B, BLOCK_H, BLOCK_K, SPLIT_K (+ optional num_warps, "
            f"num_stages, LAUNCH, GRAPH_STEPS); unknown {sorted(unknown)}, missing "
            f"{sorted(missing)}"
        )
    for name in _TILE_KEYS:
        v = meta[name]
        if not isinstance(v, int) or v < 16 or v & (v - 1) or (name != "BLOCK_B" and v > 128):
            raise ValueError(
                f"meta: {name} must be a power of two in [16, 128] (BLOCK_B: >= 16), got {v!r}"
            )
    for name, low in (("SPLIT_K", 1), ("GRAPH_STEPS", 1)):
        v = meta.get(name, low)
        if not isinstance(v, int) or v < low:
            raise ValueError(f"meta: {name} must be an int >= {low}, got {v!r}")
    mode = meta.get("LAUNCH", 0)
    if not isinstance(mode, int) or not 0 <= mode < len(LAUNCH_MODES):
        raise ValueError(f"meta: LAUNCH must index {LAUNCH_MODES} (0-3), got {mode!r}")
    return meta


def config_key(batch: int, hidden: int, dtype: torch.dtype) -> tuple:
    """``tuning`` key of a launch: dtype, B rounded up to a power of two (the batch block)
    and H rounded up to 128 (so H=1150 and 1550, or B=20 and 80, tune apart)."""
    return (*tuning.make_key(dtype, batch), tuning.round_up(hidden, _MAX_BLOCK))


def _pick_meta(kernel: str, meta, key: tuple, batch: int) -> dict | None:
    """The house rule (:func:`_common.choose_meta`), checked by :func:`_as_meta`."""
    meta = choose_meta(kernel, key, lambda: _heuristic_meta(batch), meta)
    return None if meta is None else _as_meta(meta)


def _n_slices(k: int, meta: dict) -> int:
    """K slices of a launch (the kernels derive the same slice width from SPLIT_K)."""
    width = tuning.round_up(tuning.cdiv(k, meta["SPLIT_K"]), meta["BLOCK_K"])
    return tuning.cdiv(k, width)


def _dot_precision(dtype: torch.dtype) -> str:
    """The ``tl.dot`` input precision of a launch (IEEE always under the interpreter)."""
    return "ieee" if interpreting() else _dot_precision_for(dtype)


def _dot_precision_for(dtype: torch.dtype) -> str:
    """fp32 is fp32: TF32 only when ``torch.backends.cuda.matmul.allow_tf32`` is on (the
    switch ``nn.Linear`` follows; off by default), IEEE fp32 otherwise. bf16/fp16 inputs
    multiply exactly either way."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


# --------------------------------------------------------------------------- workspace


@dataclass
class SplitKWorkspace:
    """Scratch of one direction's split-K steps: fp32 partial products and int32 ticket
    counters. The counters are zero between launches (each tile's last arriver resets its
    own), so one workspace serves every step, and any number of segments, in turn."""

    partials: torch.Tensor
    counters: torch.Tensor


def _reduction(direction: str, hidden: int) -> tuple[int, int]:
    """(K of the split reduction, output columns per batch row) of ``direction``."""
    return (hidden, 4 * hidden) if direction == "fwd" else (4 * hidden, hidden)


def _workspace_need(direction: str, batch: int, hidden: int, metas: list[dict]) -> tuple[int, int]:
    k, cols = _reduction(direction, hidden)
    parts = max(_n_slices(k, m) for m in metas) * batch * cols
    tiles = max(tuning.cdiv(batch, m["BLOCK_B"]) * tuning.cdiv(hidden, m["BLOCK_H"]) for m in metas)
    return parts, tiles


def _candidates_for(direction: str, batch: int, device) -> list[dict]:
    """What ``@triton.autotune`` may launch on ``device`` for this batch size (after its
    pruning)."""
    tuned = _lstm_fwd_step_tuned if direction == "fwd" else _lstm_bwd_step_tuned
    metas = tuned.metas(device)
    return [m for m in metas if m["BLOCK_B"] == _block_b(batch)] or metas


def lstm_workspace(
    direction: str, batch: int, hidden: int, device: torch.device | str, meta: dict | None = None
) -> SplitKWorkspace:
    """A workspace of its own (the launchers otherwise share the stream's ticket counters,
    ``_common.ticket_counters``) big enough for ``direction`` ("fwd" or "bwd") at this
    shape, launched with ``meta`` (None: any config the autotuner may pick)."""
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"lstm_workspace: direction must be 'fwd' or 'bwd', got {direction!r}")
    metas = [_as_meta(meta)] if meta is not None else _candidates_for(direction, batch, device)
    parts, tiles = _workspace_need(direction, batch, hidden, metas)
    return SplitKWorkspace(
        torch.empty(parts, device=device, dtype=torch.float32),
        torch.zeros(tiles, device=device, dtype=torch.int32),
    )


def _use_workspace(
    ws: SplitKWorkspace | None, direction: str, batch: int, hidden: int, device, meta
) -> SplitKWorkspace:
    """``ws`` checked, or fresh partials with the stream's shared ticket counters."""
    metas = [meta] if meta is not None else _candidates_for(direction, batch, device)
    parts, tiles = _workspace_need(direction, batch, hidden, metas)
    if ws is None:
        partials = torch.empty(parts, device=device, dtype=torch.float32)
        return SplitKWorkspace(partials, ticket_counters(torch.device(device), tiles))
    if ws.partials.numel() < parts or ws.counters.numel() < tiles:
        raise ValueError(
            f"workspace: too small for {direction} B={batch} H={hidden}: needs {parts} "
            f"partials and {tiles} counters, has {ws.partials.numel()} and "
            f"{ws.counters.numel()} (make it with lstm_workspace)"
        )
    return ws


# --------------------------------------------------------------------------- launching


def _launch_choice(launch: str | None, meta: dict | None, device: torch.device) -> tuple[str, int]:
    """(mode, steps per graph): the ``launch`` keyword, else the meta's ``LAUNCH``, else
    "plain"; a PDL mode loses PDL (with a warning) where PDL is missing."""
    meta = meta or {}
    if launch is None:
        launch = LAUNCH_MODES[meta.get("LAUNCH", 0)]
    elif launch not in LAUNCH_MODES:
        raise ValueError(f"launch must be one of {LAUNCH_MODES}, got {launch!r}")
    if launch.endswith("pdl"):
        why = pdl_unavailable(device)
        if why is not None:
            fallback = "graph" if launch == "graph-pdl" else "plain"
            warnings.warn(
                f"lstm_segment: launch={launch!r} runs as {fallback!r}: {why}",
                RuntimeWarning,
                stacklevel=3,
            )
            launch = fallback
    return launch, meta.get("GRAPH_STEPS", GRAPH_STEPS)


def _warn_fallback(what: str, err: Exception) -> None:
    msg = " ".join(str(err).split())[:200]
    warnings.warn(
        f"lstm_segment: {what} failed ({type(err).__name__}: {msg}); launching the "
        f"remaining steps plainly",
        RuntimeWarning,
        stacklevel=4,
    )


def _tile_meta(meta: dict | None) -> dict | None:
    """A meta without its launch-mode keys (LAUNCH, GRAPH_STEPS), which are not kernel
    arguments."""
    return None if meta is None else {k: v for k, v in meta.items() if k not in _LAUNCH_KEYS}


class _Stepper:
    """Launches one step kernel with a fixed config, however the steps are scheduled
    (plain, PDL, graph): the step's arguments come from ``args(step_base, step)``, and
    the config from a :class:`PinningLauncher` (the first launch autotunes and pins when
    no config was chosen). The launch-mode keys of a meta are not kernel arguments."""

    def __init__(self, launcher: PinningLauncher, args: Callable):
        self.launcher = launcher
        self.args = args  # (step_base, step) -> the kernel's arguments and constexprs

    def __call__(self, step: int, step_base: torch.Tensor | None = None, pdl: bool = False):
        args, constexprs = self.args(step_base, step)
        extra = {"launch_pdl": True} if pdl else {}
        self.launcher(*args, **constexprs, USE_PDL=pdl, **extra)


def _run_steps(
    stepper: _Stepper,
    device: torch.device,
    first: int,
    count: int,
    sign: int,
    noop: int,
    mode: str,
    graph_steps: int,
) -> None:
    """Launch steps first, first + sign, ... (``count`` of them) in ``mode``.

    The first step is always an ordinary launch (it also autotunes and compiles, and it
    orders the chain after whatever produced the inputs). ``noop``: a step value that the
    kernel skips whatever the device step index holds, used to compile the graph variant
    before capture. A failing PDL launch or graph capture falls back to plain launches.
    """
    stepper(first)
    rest = count - 1
    if rest == 0:
        return
    start = first + sign
    pdl = mode.endswith("pdl")
    if mode in ("graph", "graph-pdl"):
        done = _run_graph(stepper, device, start, rest, sign, noop, pdl, graph_steps)
        if done:
            return
        pdl = False
    for j in range(rest):
        step = start + sign * j
        if pdl:
            try:
                stepper(step, pdl=True)
                continue
            except Exception as err:  # noqa: BLE001 - an unusable PDL path must not stop training
                _warn_fallback("a PDL launch", err)
                pdl = False
        stepper(step)


def _run_graph(
    stepper: _Stepper,
    device: torch.device,
    start: int,
    rest: int,
    sign: int,
    noop: int,
    pdl: bool,
    graph_steps: int,
) -> bool:
    """Steps start, start + sign, ... (``rest``) as replays of one captured chunk of ``n``
    launches that read the step index from a device integer and advance it by ``n``.
    On a CPU the chunks run eagerly. Returns False, having launched nothing that changes
    results, if compiling or capturing failed (the caller then launches plainly)."""
    replays = tuning.cdiv(rest, graph_steps)
    n = tuning.cdiv(rest, replays)  # the fewest surplus (no-op) steps for this many replays
    base = torch.full((1,), start, dtype=torch.int32, device=device)

    def chunk():
        for j in range(n):
            stepper(sign * j, step_base=base, pdl=pdl)
        base.add_(sign * n)

    if device.type != "cuda":
        for _ in range(replays):
            chunk()
        return True
    try:
        stepper(noop, step_base=base, pdl=pdl)  # compile the variant before capture
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                chunk()
            finally:
                graph.capture_end()
    except Exception as err:  # noqa: BLE001 - an unusable graph path must not stop training
        _warn_fallback("capturing the step graph", err)
        return False
    for _ in range(replays):
        graph.replay()
    return True


def _padded_weight(w_hh: torch.Tensor) -> tuple[torch.Tensor, int]:
    """W_hh with its row stride rounded up to 128 (zero columns), and that stride."""
    hidden = w_hh.shape[1]
    ldw = tuning.round_up(hidden, _MAX_BLOCK)
    if ldw == hidden:
        return w_hh, ldw
    return torch.nn.functional.pad(w_hh, (0, ldw - hidden)), ldw


def _check_inputs(gx, w_hh, h0, c0) -> None:
    check_tensor("lstm_segment", "gx", gx)
    if gx.dim() != 3 or gx.shape[0] < 1 or gx.shape[1] < 1:
        raise ValueError(
            f"lstm_segment: gx must be [T, B, 4H] with T, B >= 1, got {tuple(gx.shape)}"
        )
    same = {"dtype": gx.dtype, "device": gx.device, "contiguous": True, "ref": "gx"}
    check_tensor("lstm_segment", "w_hh", w_hh, **same)
    if w_hh.dim() != 2 or w_hh.shape[1] < 1 or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"lstm_segment: w_hh must be [4H, H] with H >= 1, got {tuple(w_hh.shape)}")
    _, batch, gates = gx.shape
    hidden = w_hh.shape[1]
    if gates != 4 * hidden:
        raise ValueError(
            f"lstm_segment: gx's last dim must be 4H = {4 * hidden} (from w_hh "
            f"{tuple(w_hh.shape)}), got {gates}"
        )
    check_tensor("lstm_segment", "gx", gx, contiguous=True)
    check_tensor("lstm_segment", "h0", h0, shape=(batch, hidden), **same)
    # the cell state may be carried in fp32 whatever the storage dtype
    check_tensor("lstm_segment", "c0", c0, shape=(batch, hidden), fp32_ok=True, **same)


def _grid(direction: str, batch: int, hidden: int) -> Callable[[dict], tuple[int, int, int]]:
    k, _ = _reduction(direction, hidden)

    def grid(meta: dict) -> tuple[int, int, int]:
        return (
            tuning.cdiv(hidden, meta["BLOCK_H"]),
            _n_slices(k, meta),
            tuning.cdiv(batch, meta["BLOCK_B"]),
        )

    return grid


def lstm_segment_forward(
    gx: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    *,
    save_for_backward: bool = True,
    meta: dict | None = None,
    launch: str | None = None,
    workspace: SplitKWorkspace | None = None,
    slice_shift: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the forward steps. Inputs as in :func:`lstm_segment` (checked here).

    Returns (h_all [T+1, B, H] storage dtype, c_all [T+1, B, H] fp32, act [T, B, 4H] fp32
    or None unless ``save_for_backward``). ``meta``: a dict (BLOCK_B, BLOCK_H, BLOCK_K,
    SPLIT_K; optional num_warps, num_stages, LAUNCH, GRAPH_STEPS) forcing the config; else
    a ``tuning`` override for ("lstm_fwd", ``config_key``), else autotune with plain
    launches (one heuristic config under the interpreter). ``launch``: one of
    ``LAUNCH_MODES``, overriding the meta's LAUNCH (default "plain"). ``workspace``: reused
    scratch (:func:`lstm_workspace`).
    ``slice_shift``: which K slice each program of a tile computes; the results are the
    same bits whatever it is (tests use it to change which program arrives last).
    """
    _check_inputs(gx, w_hh, h0, c0)
    n_steps, batch, _ = gx.shape
    hidden = w_hh.shape[1]
    key = config_key(batch, hidden, gx.dtype)
    meta = _pick_meta(_FWD, meta, key, batch)
    mode, graph_steps = _launch_choice(launch, meta, gx.device)
    ws = _use_workspace(workspace, "fwd", batch, hidden, gx.device, meta)
    w, ldw = _padded_weight(w_hh)
    h_all = torch.empty((n_steps + 1, batch, hidden), device=gx.device, dtype=gx.dtype)
    c_all = torch.empty((n_steps + 1, batch, hidden), device=gx.device, dtype=torch.float32)
    h_all[0].copy_(h0)
    c_all[0].copy_(c0)
    act = (
        torch.empty((n_steps, batch, 4 * hidden), device=gx.device, dtype=torch.float32)
        if save_for_backward
        else c_all  # never written (SAVE_ACT=False); any valid pointer
    )
    constexprs = {"SAVE_ACT": save_for_backward, "DOT_PREC": _dot_precision(gx.dtype)}

    def args(step_base, step):
        return (gx, w, h_all, c_all, act, ws.partials, ws.counters, step_base, step,
                n_steps, batch, hidden, ldw), dict(constexprs, slice_shift=slice_shift)  # fmt: skip

    launcher = PinningLauncher(_FWD, _lstm_fwd_step_kernel, _lstm_fwd_step_tuned(gx.device),
                               key=key, grid=_grid("fwd", batch, hidden),
                               meta=_tile_meta(meta))  # fmt: skip
    stepper = _Stepper(launcher, args)
    _run_steps(stepper, gx.device, 0, n_steps, 1, n_steps, mode, graph_steps)
    return h_all, c_all, (act if save_for_backward else None)


def lstm_segment_backward(
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    c_all: torch.Tensor,
    act: torch.Tensor,
    dh_seq: torch.Tensor | None,
    dh_T: torch.Tensor | None,
    dc_T: torch.Tensor | None,
    *,
    meta: dict | None = None,
    launch: str | None = None,
    workspace: SplitKWorkspace | None = None,
    slice_shift: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward steps (keywords as in :func:`lstm_segment_forward`; kernel
    "lstm_bwd"). ``h_all``, ``c_all``, ``act``: what the forward returned.

    dh_seq [T, B, H], dh_T, dc_T [B, H]: upstream gradients (each may be None = zeros).
    Returns (dgates [T, B, 4H] in W_hh's dtype, dh0 [B, H] fp32, dc0 [B, H] fp32).
    """
    n_steps, batch, _ = act.shape
    hidden = w_hh.shape[1]
    dev = w_hh.device
    key = config_key(batch, hidden, w_hh.dtype)
    meta = _pick_meta(_BWD, meta, key, batch)
    mode, graph_steps = _launch_choice(launch, meta, dev)
    ws = _use_workspace(workspace, "bwd", batch, hidden, dev, meta)
    w, ldw = _padded_weight(w_hh)
    dgates = torch.empty((n_steps + 1, batch, 4 * hidden), device=dev, dtype=w_hh.dtype)
    dgates[n_steps].zero_()  # step T-1's recurrent term: no step T
    dc = torch.empty((2, batch, hidden), device=dev, dtype=torch.float32)
    if dc_T is None:
        dc[n_steps % 2].zero_()
    else:
        dc[n_steps % 2].copy_(dc_T)
    dh0 = torch.empty((batch, hidden), device=dev, dtype=torch.float32)
    dh_seq = None if dh_seq is None else dh_seq.contiguous()
    dh_T = None if dh_T is None else dh_T.contiguous()
    constexprs = {"DOT_PREC": _dot_precision(w_hh.dtype)}

    def args(step_base, step):
        return (w, act, c_all, dh_seq, dh_T, dgates, dc, dh0, ws.partials, ws.counters,
                step_base, step, n_steps, batch, hidden, ldw), dict(
                    constexprs, slice_shift=slice_shift)  # fmt: skip

    launcher = PinningLauncher(_BWD, _lstm_bwd_step_kernel, _lstm_bwd_step_tuned(dev),
                               key=key, grid=_grid("bwd", batch, hidden),
                               meta=_tile_meta(meta))  # fmt: skip
    stepper = _Stepper(launcher, args)
    # steps T-1 down to -1 (dh0); a step below -1 is a no-op
    _run_steps(stepper, dev, n_steps - 1, n_steps + 1, -1, -n_steps - 2, mode, graph_steps)
    return dgates[:n_steps], dh0, dc[0]


# --------------------------------------------------------------------------- autograd


class LSTMSegmentFunction(torch.autograd.Function):
    """Triton LSTM segment with gradients for gx, w_hh, h0 and c0."""

    @staticmethod
    def forward(ctx, gx, w_hh, h0, c0, launch):
        h_all, c_all, act = lstm_segment_forward(gx, w_hh, h0, c0, launch=launch)
        ctx.set_materialize_grads(False)  # unused outputs arrive as None: no zero tensors
        ctx.save_for_backward(w_hh, h_all, c_all, act)
        ctx.dtypes = (h0.dtype, c0.dtype)
        ctx.launch = launch
        return h_all[1:], h_all[-1].clone(), c_all[-1].to(c0.dtype, copy=True)

    @staticmethod
    def backward(ctx, dh_seq, dh_T, dc_T):
        w_hh, h_all, c_all, act = ctx.saved_tensors
        h0_dtype, c0_dtype = ctx.dtypes
        dgates, dh0, dc0 = lstm_segment_backward(
            w_hh, h_all, c_all, act, dh_seq, dh_T, dc_T, launch=ctx.launch
        )
        need_gx, need_w, need_h0, need_c0, _ = ctx.needs_input_grad
        dw = None
        if need_w:  # one GEMM over all steps; fp16/bf16: cuBLAS accumulates in fp32
            n_steps, batch, gates = dgates.shape
            dw = dgates.reshape(n_steps * batch, gates).t() @ h_all[:-1].reshape(
                n_steps * batch, -1
            )
        dgx = dgates if need_gx else None  # already gx's dtype
        dh0 = dh0.to(h0_dtype) if need_h0 else None
        dc0 = dc0.to(c0_dtype, copy=True) if need_c0 else None
        return dgx, dw, dh0, dc0, None


# --------------------------------------------------------------------------- reference


def lstm_segment_reference(
    gx: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain PyTorch LSTM recurrence. gx: [T, B, 4H]; w_hh: [4H, H]; h0, c0: [B, H].

    Returns (h_seq [T, B, H], h_T [B, H], c_T [B, H]): h in gx's dtype, c in c0's when
    that is wider (an fp32 c0 keeps the cell state in fp32 under bf16 storage).
    """
    h, c = h0, c0
    hs = []
    for t in range(gx.shape[0]):
        gates = gx[t] + h @ w_hh.t()
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = (torch.sigmoid(o) * torch.tanh(c)).to(gx.dtype)
        hs.append(h)
    return torch.stack(hs), h, c


# --------------------------------------------------------------------------- public


def lstm_segment(
    gx: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    *,
    backend: str = "auto",
    launch: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LSTM recurrence over a segment, differentiable in gx, w_hh, h0 and c0.

    Args:
        gx: [T, B, 4H] input projection x @ W_ih^T + b, gate order i, f, g, o.
        w_hh: [4H, H] recurrent weights, gx's dtype.
        h0: [B, H] initial hidden state, gx's dtype.
        c0: [B, H] initial cell state, gx's dtype or float32 (so that the cell state
            crosses segment boundaries unrounded under fp16/bf16 storage).
        backend: "auto" (Triton on CUDA tensors, else the reference), "torch", "triton".
        launch: how the Triton path launches its steps, one of ``LAUNCH_MODES`` ("plain",
            "pdl", "graph", "graph-pdl"); None takes the tuned choice (the ``LAUNCH`` key
            of a "lstm_fwd" / "lstm_bwd" ``tuning`` override), else "plain". Every mode
            gives the same bits.

    Returns:
        (h_seq [T, B, H], h_T [B, H], c_T [B, H]): h in gx's dtype, c_T in c0's. The Triton
        path computes in fp32 and keeps c in fp32 between steps.

    Raises:
        ValueError: on the Triton path, for a wrong shape, dtype, device, layout or launch
            mode (naming it).
    """
    if launch is not None and launch not in LAUNCH_MODES:
        raise ValueError(f"lstm_segment: launch must be one of {LAUNCH_MODES}, got {launch!r}")
    if use_triton(backend, gx, w_hh, h0, c0):
        _check_inputs(gx, w_hh, h0, c0)
        needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (gx, w_hh, h0, c0))
        if needs_grad:
            return LSTMSegmentFunction.apply(gx, w_hh, h0, c0, launch)
        h_all, c_all, _ = lstm_segment_forward(
            gx, w_hh, h0, c0, save_for_backward=False, launch=launch
        )
        return h_all[1:], h_all[-1].clone(), c_all[-1].to(c0.dtype, copy=True)
    return lstm_segment_reference(gx, w_hh, h0, c0)
