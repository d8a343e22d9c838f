"""LSTM segment: the recurrent part of one LSTM layer over a whole segment.

The input projection for all steps (x @ W_ih^T + b) is one GEMM done by the caller; this
family runs the serial part: gates_t = gx_t + h_{t-1} @ W_hh^T, gate order i, f, g, o
(PyTorch's), c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t).

Design (per-step fused kernels, time loop on the host)
------------------------------------------------------
Forward, one launch per step t, grid (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)). A program owns
BLOCK_H hidden units j for BLOCK_B batch rows. It streams h_{t-1}[b, :] and the four row
blocks W_hh[g*H + j, :] (g = i, f, g, o) in BLOCK_K chunks through four ``tl.dot``
accumulators (fp32), adds gx_t, applies the nonlinearities (tanh(x) = 2*sigmoid(2x) - 1)
and the cell update in registers, and writes h_t, c_t (and, when a backward will follow,
the activated gates). Every program needs the whole h_{t-1}, which is what forces one
launch per step here: a grid-wide barrier is the only other way; it hangs under the
interpreter (programs run one after another) and is not built here. Because units j are
owned by one program, the four gates of a unit never leave registers: the gate
pre-activations never touch memory.

Backward, one launch per step from t = T-1 down to 0, same grid: a program computes the
recurrent gradient dh_rec[b, j] = dgates_{t+1}[b, :] @ W_hh[:, j] (K = 4H, fp32 accumulate)
fused with the element-wise LSTM backward of step t (dh = dh_seq[t] + dh_rec, dc carried
in fp32 through two ping-pong buffers so that every launch is idempotent, which
``triton.autotune`` needs), and writes dgates_t = dL/d(gates_t) in fp32. One more launch
of the same kernel (``LAST``) computes dh0 = dgates_0 @ W_hh. The loop reads W_hh^T (one
contiguous [H, 4H] copy per backward) so its tiles are coalesced rows. Off the serial
path, after the loop: dgx = dgates (all steps, cast to gx's dtype) and
dW_hh = dgates^T @ h_{t-1} as ONE GEMM of [4H, T*B] x [T*B, H] (cuBLAS; fp32 for fp32
storage, the storage dtype with fp32 accumulation for fp16/bf16).

What the forward saves (only when a gradient is needed): h_all [T+1, B, H] in the storage
dtype (row 0 = h0; rows 1.. are h_seq, so no extra memory), c_all [T+1, B, H] fp32 (the
recurrence carries c in fp32 through it anyway) and the activated gates [T, B, 4H] fp32:
16*T*B*H bytes, e.g. 99 MB at T=200, B=20, H=1550. Saving the gates instead of
recomputing them saves the backward a second [B, H] x [H, 4H] product per step.

Expected bound. Per step each direction reads W_hh once per batch block (4H^2 elements:
19 MB in bf16 / 38 MB in fp32 at H=1550, 3.4 MB / 6.8 MB at H=650) and does 8*B*H^2
flops (B=20: 0.38 GFLOP at H=1550): a skinny GEMM, so the ideal is the time to stream
W_hh from L2/HBM (~3-6 us/step at H=1550 bf16, ~1-2 us at H=650) plus a launch (~3 us).
Measured on an H200 (triton 3.6, B=20, T=200, bf16, CUDA-graph replay so no host
overhead): forward ~34 us/step at H=1550 and ~18 us/step at H=650, backward loop ~27 and
~15 us/step. So the kernels sit well above the streaming bound: each program walks its
whole K range serially (H/BLOCK_K dependent iterations, four small-N MMAs each) with only
cdiv(H, 16) = 41..97 programs on 132 SMs: latency-bound per program. Host-launched, the
Python loop adds ~0-10 us/step. End to end (input GEMM included, fwd+bwd) this is
~1.2-1.7x cuDNN's time at these shapes (H=1550 bf16: 17.7 ms vs 12.9 ms). What would
close the gap: split-K over more programs, or a persistent kernel that keeps W_hh slices
on chip across steps with a grid barrier (FlashRNN / persistent-RNN style); neither is
built here.

fp32 ``tl.dot`` uses TF32 on a GPU when ``torch.backends.cudnn.allow_tf32`` is True
(PyTorch's default, which is also what cuDNN's LSTM does), IEEE fp32 otherwise and always
under the interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import tuning
from ._common import check_tensor, sigmoid, tanh
from ._dispatch import interpreting, use_triton

# ----------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["t"])
def _lstm_fwd_step_kernel(
    gx_ptr,  # [T, B, 4H] input projections incl. bias (storage dtype)
    w_ptr,  # [4H, H] recurrent weights W_hh (storage dtype)
    h_ptr,  # [T+1, B, H] h_all: reads row t (= h_{t-1}), writes row t+1 (= h_t)
    c_ptr,  # [T+1, B, H] fp32 c_all, same rows as h_all
    act_ptr,  # [T, B, 4H] fp32 activated gates i, f, g, o (written iff SAVE_ACT)
    t,  # step index (runtime int, not a specialisation key)
    B,  # batch size
    H,  # hidden size
    SAVE_ACT: tl.constexpr,  # store the activated gates for the backward
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 ("ieee" or "tf32")
    BLOCK_B: tl.constexpr,  # batch rows per program (>= 16 for tl.dot)
    BLOCK_H: tl.constexpr,  # hidden units per program
    BLOCK_K: tl.constexpr,  # reduction chunk over h_{t-1}
):
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_j = offs_j < H
    mask_bj = mask_b[:, None] & mask_j[None, :]
    t64 = t.to(tl.int64)
    BH = B * H  # step offsets below are int64 (t64 * BH)
    h_prev = h_ptr + t64 * BH

    acc_i = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_f = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_o = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    HH = H * H
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        hk = tl.load(
            h_prev + offs_b[:, None] * H + offs_k[None, :],
            mask=mask_b[:, None] & mask_k[None, :],
            other=0.0,
        )
        # rows q*H + j of W_hh (gate q), k contiguous: coalesced; transposed for the dot
        w_tile = w_ptr + offs_j[:, None] * H + offs_k[None, :]
        w_mask = mask_j[:, None] & mask_k[None, :]
        w_i = tl.load(w_tile, mask=w_mask, other=0.0)
        acc_i = tl.dot(hk, tl.trans(w_i), acc_i, input_precision=DOT_PREC)
        w_f = tl.load(w_tile + HH, mask=w_mask, other=0.0)
        acc_f = tl.dot(hk, tl.trans(w_f), acc_f, input_precision=DOT_PREC)
        w_g = tl.load(w_tile + 2 * HH, mask=w_mask, other=0.0)
        acc_g = tl.dot(hk, tl.trans(w_g), acc_g, input_precision=DOT_PREC)
        w_o = tl.load(w_tile + 3 * HH, mask=w_mask, other=0.0)
        acc_o = tl.dot(hk, tl.trans(w_o), acc_o, input_precision=DOT_PREC)

    gate_off = t64 * BH * 4 + offs_b[:, None] * (4 * H) + offs_j[None, :]
    gx = gx_ptr + gate_off
    i = sigmoid(acc_i + tl.load(gx, mask=mask_bj, other=0.0).to(tl.float32))
    f = sigmoid(acc_f + tl.load(gx + H, mask=mask_bj, other=0.0).to(tl.float32))
    g = tanh(acc_g + tl.load(gx + 2 * H, mask=mask_bj, other=0.0).to(tl.float32))
    o = sigmoid(acc_o + tl.load(gx + 3 * H, mask=mask_bj, other=0.0).to(tl.float32))

    state_off = offs_b[:, None] * H + offs_j[None, :]
    c_prev = tl.load(c_ptr + t64 * BH + state_off, mask=mask_bj, other=0.0)
    c = f * c_prev + i * g
    h = o * tanh(c)
    tl.store(c_ptr + (t64 + 1) * BH + state_off, c, mask=mask_bj)
    tl.store(h_ptr + (t64 + 1) * BH + state_off, h.to(h_ptr.dtype.element_ty), mask=mask_bj)
    if SAVE_ACT:
        act = act_ptr + gate_off
        tl.store(act, i, mask=mask_bj)
        tl.store(act + H, f, mask=mask_bj)
        tl.store(act + 2 * H, g, mask=mask_bj)
        tl.store(act + 3 * H, o, mask=mask_bj)


@triton.jit(do_not_specialize=["t"])
def _lstm_bwd_step_kernel(
    wt_ptr,  # [H, 4H] W_hh^T, contiguous (storage dtype)
    act_ptr,  # [T, B, 4H] fp32 activated gates saved by the forward
    c_ptr,  # [T+1, B, H] fp32 c_all saved by the forward (row t+1 = c_t)
    dhseq_ptr,  # [T, B, H] upstream dL/dh_seq (read iff HAS_DHSEQ)
    dhT_ptr,  # [B, H] upstream dL/dh_T (read iff FIRST)
    dgates_ptr,  # [T, B, 4H] fp32: reads row t+1 (unless FIRST), writes row t (unless LAST)
    dc_in_ptr,  # [B, H] fp32 dL/dc_t (unless LAST)
    dc_out_ptr,  # [B, H] fp32 dL/dc_{t-1} (unless LAST)
    dh0_ptr,  # [B, H] dL/dh0 (written iff LAST)
    t,  # step index; LAST uses t = -1
    B,  # batch size
    H,  # hidden size
    FIRST: tl.constexpr,  # t = T-1: no recurrent term, dL/dh_T instead
    LAST: tl.constexpr,  # t = -1: only dh0 = dgates_0 @ W_hh
    HAS_DHSEQ: tl.constexpr,  # upstream dL/dh_seq given
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 ("ieee" or "tf32")
    BLOCK_B: tl.constexpr,  # batch rows per program (>= 16 for tl.dot)
    BLOCK_H: tl.constexpr,  # hidden units per program
    BLOCK_K: tl.constexpr,  # reduction chunk over the 4H gate gradients
):
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_j = offs_j < H
    mask_bj = mask_b[:, None] & mask_j[None, :]
    t64 = t.to(tl.int64)
    BH = B * H  # step offsets below are int64 (t64 * BH)
    H4 = 4 * H
    state_off = offs_b[:, None] * H + offs_j[None, :]

    if FIRST:
        dh = tl.load(dhT_ptr + state_off, mask=mask_bj, other=0.0).to(tl.float32)
    else:
        # dh_rec[b, j] = sum_k dgates_{t+1}[b, k] * W_hh^T[j, k]
        dh = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        dg_next = dgates_ptr + (t64 + 1) * BH * 4
        for k0 in range(0, H4, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < H4
            dg = tl.load(
                dg_next + offs_b[:, None] * H4 + offs_k[None, :],
                mask=mask_b[:, None] & mask_k[None, :],
                other=0.0,
            )
            wt = tl.load(  # W_hh^T rows j, k contiguous: coalesced
                wt_ptr + offs_j[:, None] * H4 + offs_k[None, :],
                mask=mask_j[:, None] & mask_k[None, :],
                other=0.0,
            )
            dh = tl.dot(dg.to(wt.dtype), tl.trans(wt), dh, input_precision=DOT_PREC)

    if LAST:
        tl.store(dh0_ptr + state_off, dh.to(dh0_ptr.dtype.element_ty), mask=mask_bj)
    else:
        if HAS_DHSEQ:
            dh += tl.load(dhseq_ptr + t64 * BH + state_off, mask=mask_bj, other=0.0).to(tl.float32)
        gate_off = t64 * BH * 4 + offs_b[:, None] * H4 + offs_j[None, :]
        act = act_ptr + gate_off
        i = tl.load(act, mask=mask_bj, other=0.0)
        f = tl.load(act + H, mask=mask_bj, other=0.0)
        g = tl.load(act + 2 * H, mask=mask_bj, other=0.0)
        o = tl.load(act + 3 * H, mask=mask_bj, other=0.0)
        c_prev = tl.load(c_ptr + t64 * BH + state_off, mask=mask_bj, other=0.0)
        c = tl.load(c_ptr + (t64 + 1) * BH + state_off, mask=mask_bj, other=0.0)
        tc = tanh(c)
        dc = tl.load(dc_in_ptr + state_off, mask=mask_bj, other=0.0) + dh * o * (1.0 - tc * tc)
        dg_out = dgates_ptr + gate_off
        tl.store(dg_out, dc * g * i * (1.0 - i), mask=mask_bj)
        tl.store(dg_out + H, dc * c_prev * f * (1.0 - f), mask=mask_bj)
        tl.store(dg_out + 2 * H, dc * i * (1.0 - g * g), mask=mask_bj)
        tl.store(dg_out + 3 * H, dh * tc * o * (1.0 - o), mask=mask_bj)
        tl.store(dc_out_ptr + state_off, dc * f, mask=mask_bj)


# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------

_META_KEYS = ("BLOCK_B", "BLOCK_H", "BLOCK_K")
_FWD, _BWD = "lstm_fwd", "lstm_bwd"  # kernel names in the ``tuning`` registry


def _block_b(batch: int) -> int:
    """Batch rows per program: the smallest of 16/32/64 covering B (tl.dot needs >= 16)."""
    for cand in (16, 32):
        if batch <= cand:
            return cand
    return 64


def configs_lstm_fwd() -> list[dict]:
    """Forward per-step config space (``tuning`` meta dicts): BLOCK_B 16/32/64 (autotune
    prunes to the one that covers B, so one batch block reads W_hh once), BLOCK_H 16/32/64
    (H=1550: 97/49/25 programs per batch block), BLOCK_K 64/128; 4 warps, 2 stages. Six
    configs survive the pruning."""
    return [
        {"BLOCK_B": bb, "BLOCK_H": bh, "BLOCK_K": bk, "num_warps": 4, "num_stages": 2}
        for bb in (16, 32, 64)
        for bh in (16, 32, 64)
        for bk in (64, 128)
    ]


def configs_lstm_bwd() -> list[dict]:
    """Backward per-step config space: the forward's (BLOCK_K chunks the 4H reduction)."""
    return configs_lstm_fwd()


tuning.register(_FWD, configs_lstm_fwd)
tuning.register(_BWD, configs_lstm_bwd)


def _heuristic_meta(batch: int) -> dict:
    """The single config used under the interpreter (few, small programs)."""
    return {"BLOCK_B": _block_b(batch), "BLOCK_H": 16, "BLOCK_K": 32, "num_warps": 4,
            "num_stages": 2}  # fmt: skip


def _prune_block_b(configs, named_args, **kwargs):
    want = _block_b(named_args["B"])
    kept = [c for c in configs if c.kwargs["BLOCK_B"] == want]
    return kept or list(configs)


_lstm_fwd_step_tuned = triton.autotune(
    configs=tuning.to_triton(configs_lstm_fwd()),
    key=["B", "H", "SAVE_ACT"],
    prune_configs_by={"early_config_prune": _prune_block_b},
)(_lstm_fwd_step_kernel)

_lstm_bwd_step_tuned = triton.autotune(
    configs=tuning.to_triton(configs_lstm_bwd()),
    key=["B", "H"],  # the FIRST / LAST / HAS_DHSEQ variants reuse the tuned config
    prune_configs_by={"early_config_prune": _prune_block_b},
)(_lstm_bwd_step_kernel)


def _as_meta(config) -> dict | None:
    """A triton.Config or a meta dict (BLOCK_B/H/K, num_warps, num_stages), checked."""
    if config is None:
        return None
    if isinstance(config, triton.Config):
        meta = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
    else:
        meta = dict(config)
    unknown = set(meta) - {*_META_KEYS, "num_warps", "num_stages"}
    missing = set(_META_KEYS) - set(meta)
    if unknown or missing:
        raise ValueError(
            f"config: needs BLOCK_B, BLOCK_H, BLOCK_K (+ optional num_warps, num_stages); "
            f"unknown {sorted(unknown)}, missing {sorted(missing)}"
        )
    for name in _META_KEYS:
        v = meta[name]
        if not isinstance(v, int) or v < 16 or v & (v - 1):
            raise ValueError(f"config: {name} must be a power of two >= 16, got {v!r}")
    return meta


def config_key(batch: int, hidden: int, dtype: torch.dtype) -> tuple:
    """``tuning`` key of a launch: dtype and the per-step parallel extent B*H, bucketed."""
    return tuning.make_key(dtype, batch * hidden)


def _choose_meta(kernel: str, config, batch: int, hidden: int, dtype) -> dict | None:
    """Explicit ``config`` > ``tuning.pick`` (override, else the interpreter's heuristic)
    > None (autotune)."""
    if config is not None:
        return _as_meta(config)
    picked = tuning.pick(kernel, config_key(batch, hidden, dtype), lambda: _heuristic_meta(batch))
    return _as_meta(picked)


def _dot_precision(dtype: torch.dtype) -> str:
    if interpreting():
        return "ieee"
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"


# ----------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------


class _StepLauncher:
    """Launches one step kernel T times with a fixed config.

    With a forced ``meta`` it launches the plain jitted kernel. Otherwise the first step
    goes through ``@triton.autotune`` (tuning on a cache miss) and the remaining steps launch
    the plain kernel with the tuned winner, skipping the autotuner's per-call key building
    (host overhead is what bounds the per-step design at small H).
    """

    def __init__(self, kernel, tuned, meta, batch: int, hidden: int):
        self.kernel, self.tuned, self.meta = kernel, tuned, meta
        self.batch, self.hidden = batch, hidden
        self.grid = None if meta is None else self._grid(meta)

    def _grid(self, meta):
        return (triton.cdiv(self.batch, meta["BLOCK_B"]), triton.cdiv(self.hidden, meta["BLOCK_H"]))

    def __call__(self, *args, **constexprs):
        if self.meta is not None:
            self.kernel[self.grid](*args, **constexprs, **self.meta)
            return
        self.tuned[self._grid](*args, **constexprs)
        best = getattr(self.tuned, "best_config", None)
        if best is not None:
            self.meta = _as_meta(best)
            self.grid = self._grid(self.meta)


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


def lstm_segment_forward_triton(gx, w_hh, h0, c0, *, save_for_backward=True, config=None):
    """Run the forward per-step kernels. Inputs checked by ``_check_inputs``.

    Returns (h_all [T+1, B, H] storage dtype, c_all [T+1, B, H] fp32, act [T, B, 4H] fp32
    or None). ``config``: a triton.Config or dict (BLOCK_B, BLOCK_H, BLOCK_K, num_warps,
    num_stages) forcing the launch config; else a ``tuning`` override for ("lstm_fwd",
    ``config_key``), else autotune (one heuristic config under the interpreter).
    """
    n_steps, batch, _ = gx.shape
    hidden = w_hh.shape[1]
    h_all = torch.empty((n_steps + 1, batch, hidden), device=gx.device, dtype=gx.dtype)
    c_all = torch.empty((n_steps + 1, batch, hidden), device=gx.device, dtype=torch.float32)
    h_all[0].copy_(h0)
    c_all[0].copy_(c0)
    act = (
        torch.empty((n_steps, batch, 4 * hidden), device=gx.device, dtype=torch.float32)
        if save_for_backward
        else c_all  # never written (SAVE_ACT=False); any valid pointer
    )
    prec = _dot_precision(gx.dtype)
    launch = _StepLauncher(
        _lstm_fwd_step_kernel, _lstm_fwd_step_tuned,
        _choose_meta(_FWD, config, batch, hidden, gx.dtype), batch, hidden,
    )  # fmt: skip
    for t in range(n_steps):
        launch(gx, w_hh, h_all, c_all, act, t, batch, hidden,
               SAVE_ACT=save_for_backward, DOT_PREC=prec)  # fmt: skip
    return h_all, c_all, (act if save_for_backward else None)


def lstm_segment_backward_triton(w_hh, h_all, c_all, act, dh_seq, dh_T, dc_T, *, config=None):
    """Run the backward per-step kernels (``config`` as in the forward, kernel "lstm_bwd").

    dh_seq [T, B, H], dh_T, dc_T [B, H]: upstream grads (each may be None = zeros).
    Returns (dgates [T, B, 4H] fp32, dh0 [B, H] fp32, dc0 [B, H] fp32).
    """
    n_steps, batch, _ = act.shape
    hidden = w_hh.shape[1]
    dev = w_hh.device
    dgates = torch.empty((n_steps, batch, 4 * hidden), device=dev, dtype=torch.float32)
    dh0 = torch.empty((batch, hidden), device=dev, dtype=torch.float32)
    dc_bufs = [torch.empty((batch, hidden), device=dev, dtype=torch.float32) for _ in range(2)]
    dc_in = (
        torch.zeros((batch, hidden), device=dev, dtype=torch.float32)
        if dc_T is None
        else dc_T.float().contiguous()
    )
    dh_T = (
        torch.zeros((batch, hidden), device=dev, dtype=torch.float32)
        if dh_T is None
        else dh_T.contiguous()
    )
    has_dhseq = dh_seq is not None
    dh_seq = dh_seq.contiguous() if has_dhseq else dh_T
    prec = _dot_precision(w_hh.dtype)
    w_t = w_hh.t().contiguous()  # one [H, 4H] copy per backward: coalesced rows for the loop
    launch = _StepLauncher(
        _lstm_bwd_step_kernel, _lstm_bwd_step_tuned,
        _choose_meta(_BWD, config, batch, hidden, w_hh.dtype), batch, hidden,
    )  # fmt: skip
    for t in range(n_steps - 1, -2, -1):
        dc_out = dc_bufs[t % 2]
        launch(w_t, act, c_all, dh_seq, dh_T, dgates, dc_in, dc_out, dh0, t, batch, hidden,
               FIRST=t == n_steps - 1, LAST=t == -1, HAS_DHSEQ=has_dhseq,
               DOT_PREC=prec)  # fmt: skip
        if t >= 0:
            dc_in = dc_out
    return dgates, dh0, dc_in


# ----------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------


class LSTMSegmentFunction(torch.autograd.Function):
    """Triton LSTM segment with gradients for gx, w_hh, h0 and c0."""

    @staticmethod
    def forward(ctx, gx, w_hh, h0, c0):
        h_all, c_all, act = lstm_segment_forward_triton(gx, w_hh, h0, c0)
        ctx.set_materialize_grads(False)  # unused outputs arrive as None: no zero tensors
        ctx.save_for_backward(w_hh, h_all, c_all, act)
        ctx.dtypes = (gx.dtype, h0.dtype, c0.dtype)
        h_seq = h_all[1:]
        return h_seq, h_all[-1].clone(), c_all[-1].to(c0.dtype, copy=True)

    @staticmethod
    def backward(ctx, dh_seq, dh_T, dc_T):
        w_hh, h_all, c_all, act = ctx.saved_tensors
        gx_dtype, h0_dtype, c0_dtype = ctx.dtypes
        dgates, dh0, dc0 = lstm_segment_backward_triton(w_hh, h_all, c_all, act, dh_seq, dh_T, dc_T)
        need_gx, need_w, need_h0, need_c0 = ctx.needs_input_grad
        dgx = dgates.to(gx_dtype) if need_gx else None
        dw = None
        if need_w:
            n_steps, batch, gates = dgates.shape
            mm_dtype = w_hh.dtype  # fp32 stays fp32; half types: cuBLAS accumulates in fp32
            dw = (
                dgates.reshape(n_steps * batch, gates).to(mm_dtype).t()
                @ h_all[:-1].reshape(n_steps * batch, -1).to(mm_dtype)
            ).to(w_hh.dtype)
        dh0 = dh0.to(h0_dtype) if need_h0 else None
        dc0 = dc0.to(c0_dtype) if need_c0 else None
        return dgx, dw, dh0, dc0


# ----------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------


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


def lstm_segment(
    gx: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LSTM recurrence over a segment; shapes as in ``lstm_segment_reference``.

    gx: [T, B, 4H] (x @ W_ih^T + b, gate order i, f, g, o); w_hh: [4H, H]; h0, c0: [B, H].
    Returns (h_seq [T, B, H], h_T [B, H], c_T [B, H]), h in gx's dtype, c_T in c0's. On the
    Triton path the inputs must share one dtype (float32, float16 or bfloat16; c0 may also
    be float32, so that the cell state crosses segment boundaries unrounded) and device and
    be contiguous (``ValueError`` otherwise); it is differentiable in all four inputs,
    computes in fp32 and keeps c in fp32 between steps.
    """
    if use_triton(backend, gx, w_hh, h0, c0):
        _check_inputs(gx, w_hh, h0, c0)
        needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (gx, w_hh, h0, c0))
        if needs_grad:
            return LSTMSegmentFunction.apply(gx, w_hh, h0, c0)
        h_all, c_all, _ = lstm_segment_forward_triton(gx, w_hh, h0, c0, save_for_backward=False)
        return h_all[1:], h_all[-1].clone(), c_all[-1].to(c0.dtype, copy=True)
    return lstm_segment_reference(gx, w_hh, h0, c0)
