"""The LSTM segment's Triton code: the forward and the backward step kernel, one launch
per time step (the rest of the family is Python around these two functions).

Forward step t: gates_t = gx_t + h_{t-1} @ W_hh^T, gate order i, f, g, o (PyTorch's),
c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t). The grid is (hidden tiles, K slices, batch
blocks): each program multiplies one tile of W_hh's gate rows by one K slice of h_{t-1}
into an fp32 workspace and takes an atomic ticket (``_common.last_to_arrive``: its
``acq_rel`` release publishes the partial, and the last program to draw a ticket sees every
other program's). The last program to arrive sums the slices in a fixed order (bitwise
deterministic, whichever program it is), applies the gates and resets its counter, so no
program waits for another and the same kernel runs under the interpreter. It reads the
other programs' partials with ``.cg`` loads (from L2, never a stale L1 line).

Backward step t: the same over W_hh^T, from the gate gradients of step t+1 to dh_{t-1}'s
recurrent term, then the cell's pointwise backward; step -1 writes dh0. dW_hh is one GEMM
after the loop (``LSTMSegmentFunction``).

Both take the step from an argument or, for CUDA-graph replays, from a device integer
(``STEP_FROM_MEMORY``), and wait for the previous step under programmatic dependent launch
(``USE_PDL``); ``launch.py`` schedules them, ``configs.py`` says which tiles they run with.
docs/kernels.md ("LSTM segment: design") has the full memory-visibility argument.

A file of its own so that the kernels read without the machinery around them, and so
that what changes a compiled kernel (this file and the ``@triton.jit`` helpers it calls)
is apart from what does not.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._common import gdc_launch_dependents, gdc_wait, last_to_arrive, sigmoid, tanh


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
