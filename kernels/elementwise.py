"""The authors' element-wise synthesizer, QRNN cell, one step for every scalar of the state.

Each scalar x_n of the joined state is its own sequence of input size 1 through a tiny
QRNN of U units (window 1): z = tanh(w_z x + b_z), f = sigmoid(w_f x + b_f),
o = sigmoid(w_o x + b_o), c = f*c_prev + (1-f)*z, h = o*c, y = h . v + b_out.

Kernels. A program owns BLOCK_N rows (scalars) and all U units, padded to BLOCK_U (a power
of two; U = 50 pads to 64) with column masks. The weights (w, b: [3, U], v: [U], b_out)
are loaded once per program into registers; tanh is 2 sigmoid(2x) - 1 (no libdevice).

What the forward saves: only its inputs. The backward recomputes z, f, o, c, h from x and
c_prev (a few flops per element) instead of storing 3-5 [N, U] tensors.

The weight gradients are reductions over N. Deterministically, without atomics: the
backward runs a fixed number P of programs (from N and the SM count, never from the tuned
BLOCK_N), each walking a contiguous chunk of rows and writing fp32 partial sums to a
[P, 8, U] buffer (rows dw_z, dw_f, dw_o, db_z, db_f, db_o, dv, db_out); one torch
``sum(0)`` over P then gives every weight gradient at once.

Bytes per (n, u) element, s = storage bytes of the state (4 fp32, 2 bf16) and m = 0 or s
for the dropout mask: forward reads c_prev (+ mask) and writes c: 2s + m; backward reads
c_prev, dc (+ mask) and writes dc_prev: 3s + m (x, y, dx, dy are per row: 1/U of that).
At N = 124,000, U = 50 (6.2M elements) the fp32 forward with a mask moves ~75 MB: about
17 us at an H200's 4.3 TB/s; the kernels are bandwidth bound (the arithmetic is cheap).
Measured on an H200 (Triton 3.6, autotuned, with a mask): fp32 forward 31 us (2.4 TB/s),
backward 88 us (1.1 TB/s, the torch ``sum`` over partials included); bf16 forward 61 us and
backward 84 us -- bf16 is not yet faster than fp32 (rows of U=50 bf16 are 100 bytes, not
16-byte aligned; unexplored).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import arch, tuning
from ._common import check_tensor, launch, sigmoid, tanh
from ._dispatch import use_triton

# --------------------------------------------------------------------------- kernels


@triton.heuristics({"HAS_MASK": lambda a: a["mask"] is not None})
@triton.jit
def _ew_fwd_kernel(
    x,  # [N] input scalars
    c_prev,  # [N, U] contiguous previous cell state
    w,  # [3, U] contiguous input weights, rows z, f, o
    b,  # [3, U] contiguous biases
    v,  # [U] output weights
    b_out,  # [1] output bias
    mask,  # [N, U] contiguous dropout mask on h (already scaled), or None
    y,  # [N] output, x's dtype
    c,  # [N, U] contiguous output cell state, c_prev's dtype
    N,
    U,
    HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr,  # rows per program
    BLOCK_U: tl.constexpr,  # U padded to a power of two
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_U)
    rm = rows < N
    cm = cols < U
    wz = tl.load(w + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    wf = tl.load(w + U + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    wo = tl.load(w + 2 * U + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    bz = tl.load(b + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    bf = tl.load(b + U + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    bo = tl.load(b + 2 * U + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    vv = tl.load(v + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    bout = tl.load(b_out).to(tl.float32)

    m2 = rm[:, None] & cm[None, :]
    off2 = rows[:, None] * U + cols[None, :]
    xr = tl.load(x + rows, mask=rm, other=0.0).to(tl.float32)[:, None]
    cp = tl.load(c_prev + off2, mask=m2, other=0.0).to(tl.float32)
    zz = tanh(xr * wz + bz)
    ff = sigmoid(xr * wf + bf)
    oo = sigmoid(xr * wo + bo)
    cc = ff * cp + (1.0 - ff) * zz
    hh = oo * cc
    if HAS_MASK:
        hh = hh * tl.load(mask + off2, mask=m2, other=0.0).to(tl.float32)
    yy = tl.sum(hh * vv, axis=1) + bout
    tl.store(c + off2, cc.to(c.dtype.element_ty), mask=m2)
    tl.store(y + rows, yy.to(y.dtype.element_ty), mask=rm)


@triton.heuristics(
    {
        "HAS_MASK": lambda a: a["mask"] is not None,
        "HAS_DY": lambda a: a["dy"] is not None,
        "HAS_DC": lambda a: a["dc"] is not None,
        "STORE_DCP": lambda a: a["dc_prev"] is not None,
    }
)
@triton.jit
def _ew_bwd_kernel(
    x,  # [N] input scalars
    c_prev,  # [N, U] contiguous previous cell state
    w,  # [3, U] contiguous input weights
    b,  # [3, U] contiguous biases
    v,  # [U] output weights
    mask,  # [N, U] contiguous dropout mask, or None
    dy,  # [N] upstream gradient of y, or None (zeros)
    dc,  # [N, U] contiguous upstream gradient of c, or None (zeros)
    dx,  # [N] output, x's dtype
    dc_prev,  # [N, U] contiguous output, c_prev's dtype, or None (not wanted)
    partial,  # [P, 8, U] fp32 output: this program's sums of dw (3 rows), db (3), dv, db_out
    N,
    U,
    CHUNK,  # rows per program (fixed by the launcher)
    HAS_MASK: tl.constexpr,
    HAS_DY: tl.constexpr,
    HAS_DC: tl.constexpr,
    STORE_DCP: tl.constexpr,
    BLOCK_N: tl.constexpr,  # rows per inner tile
    BLOCK_U: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_U)
    lane = tl.arange(0, BLOCK_N)
    cm = cols < U
    wz = tl.load(w + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    wf = tl.load(w + U + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    wo = tl.load(w + 2 * U + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    bz = tl.load(b + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    bf = tl.load(b + U + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    bo = tl.load(b + 2 * U + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    vv = tl.load(v + cols, mask=cm, other=0.0).to(tl.float32)[None, :]

    acc_wz = tl.zeros([BLOCK_U], dtype=tl.float32)
    acc_wf = tl.zeros([BLOCK_U], dtype=tl.float32)
    acc_wo = tl.zeros([BLOCK_U], dtype=tl.float32)
    acc_bz = tl.zeros([BLOCK_U], dtype=tl.float32)
    acc_bf = tl.zeros([BLOCK_U], dtype=tl.float32)
    acc_bo = tl.zeros([BLOCK_U], dtype=tl.float32)
    acc_v = tl.zeros([BLOCK_U], dtype=tl.float32)
    acc_out = tl.zeros([BLOCK_N], dtype=tl.float32)
    for r0 in range(0, CHUNK, BLOCK_N):
        rows = pid * CHUNK + r0 + lane
        rm = (rows < N) & (r0 + lane < CHUNK)
        m2 = rm[:, None] & cm[None, :]
        off2 = rows[:, None] * U + cols[None, :]
        # recompute the forward (masked entries: x = c_prev = 0, every gradient below is 0)
        xr = tl.load(x + rows, mask=rm, other=0.0).to(tl.float32)[:, None]
        cp = tl.load(c_prev + off2, mask=m2, other=0.0).to(tl.float32)
        zz = tanh(xr * wz + bz)
        ff = sigmoid(xr * wf + bf)
        oo = sigmoid(xr * wo + bo)
        cc = ff * cp + (1.0 - ff) * zz
        if HAS_DC:
            dct = tl.load(dc + off2, mask=m2, other=0.0).to(tl.float32)
        else:
            dct = tl.zeros([BLOCK_N, BLOCK_U], dtype=tl.float32)
        if HAS_DY:
            dyr = tl.load(dy + rows, mask=rm, other=0.0).to(tl.float32)
            acc_out += dyr
            hh = oo * cc
            dh = dyr[:, None] * vv  # d y / d (masked h)
            if HAS_MASK:
                mk = tl.load(mask + off2, mask=m2, other=0.0).to(tl.float32)
                hh = hh * mk
                dh = dh * mk
            acc_v += tl.sum(dyr[:, None] * hh, axis=0)
            dct += dh * oo
            gz_o = dh * cc * oo * (1.0 - oo)  # through o's sigmoid
        else:
            gz_o = tl.zeros([BLOCK_N, BLOCK_U], dtype=tl.float32)
        if STORE_DCP:
            tl.store(dc_prev + off2, (dct * ff).to(dc_prev.dtype.element_ty), mask=m2)
        gz_z = dct * (1.0 - ff) * (1.0 - zz * zz)  # through c, then z's tanh
        gz_f = dct * (cp - zz) * ff * (1.0 - ff)  # through c, then f's sigmoid
        dxr = tl.sum(gz_z * wz + gz_f * wf + gz_o * wo, axis=1)
        tl.store(dx + rows, dxr.to(dx.dtype.element_ty), mask=rm)
        acc_wz += tl.sum(gz_z * xr, axis=0)
        acc_wf += tl.sum(gz_f * xr, axis=0)
        acc_wo += tl.sum(gz_o * xr, axis=0)
        acc_bz += tl.sum(gz_z, axis=0)
        acc_bf += tl.sum(gz_f, axis=0)
        acc_bo += tl.sum(gz_o, axis=0)
    base = partial + pid * 8 * U + cols
    tl.store(base, acc_wz, mask=cm)
    tl.store(base + U, acc_wf, mask=cm)
    tl.store(base + 2 * U, acc_wo, mask=cm)
    tl.store(base + 3 * U, acc_bz, mask=cm)
    tl.store(base + 4 * U, acc_bf, mask=cm)
    tl.store(base + 5 * U, acc_bo, mask=cm)
    tl.store(base + 6 * U, acc_v, mask=cm)
    tl.store(base + 7 * U, tl.where(cols == 0, tl.sum(acc_out, axis=0), 0.0), mask=cm)


# --------------------------------------------------------------------------- configs

_CHUNK_ALIGN = 16


def configs_elementwise_fwd(target: arch.Where = None) -> list[dict[str, int]]:
    """Candidates for ``target`` (see ``tuning.candidates``): BLOCK_N rows per program
    (BLOCK_U is fixed by U, not tuned). BLOCK_N=128 spilled 0.25-1 KB per thread on sm_90
    (``altgrad-tune --check-configs``): not offered."""
    return tuning.candidates("elementwise_fwd", target)


def configs_elementwise_bwd(target: arch.Where = None) -> list[dict[str, int]]:
    """Candidates for ``target``: BLOCK_N rows per inner tile of the persistent backward, at
    most 8 rows per warp: 128 rows, 32 on 2 warps and 64 on 4 (16 rows per warp) spilled 1.1-1.5 KB
    per thread on sm_90, and 64 on 8 warps 12 B under Triton 3.6 (``altgrad-tune
    --check-configs``)."""
    return tuning.candidates("elementwise_bwd", target)


def _fwd_configs(limits: arch.Limits) -> list[dict[str, int]]:
    """The forward's candidates on ``limits``: the same on every supported GPU (a few KB of
    shared memory at most)."""
    pairs = [(16, 2), (16, 4), (32, 2), (32, 4), (64, 4), (64, 8)]
    return [{"BLOCK_N": bn, "num_warps": warps, "num_stages": 1} for bn, warps in pairs]


_BWD_SPILLED: arch.Measured = {a: {"3.9": {(16, 4)}} for a in ("sm_80", "sm_86", "sm_89")}
"""(BLOCK_N, num_warps) of backward candidates that spilled 8 B per thread there
(``altgrad-tune --check-configs``): not offered on that architecture with that Triton."""


def _bwd_configs(limits: arch.Limits) -> list[dict[str, int]]:
    """The backward's candidates on ``limits``: at most 8 rows per warp, less what spilled
    on its architecture (``_BWD_SPILLED``)."""
    spilled = arch.measured_failures(_BWD_SPILLED, limits)
    pairs = [p for p in ((8, 2), (16, 2), (16, 4), (32, 4)) if p not in spilled]
    return [{"BLOCK_N": bn, "num_warps": warps, "num_stages": 1} for bn, warps in pairs]


def _heuristic(n: int) -> dict[str, int]:
    """The single config used under the interpreter: few, tall programs."""
    return {"BLOCK_N": min(128, max(8, triton.next_power_of_2(n))), "num_warps": 4}


tuning.register("elementwise_fwd", _fwd_configs)
tuning.register("elementwise_bwd", _bwd_configs)

_ew_fwd_tuned = tuning.DeviceAutotune("elementwise_fwd", _ew_fwd_kernel, key=["N", "BLOCK_U"])
_ew_bwd_tuned = tuning.DeviceAutotune("elementwise_bwd", _ew_bwd_kernel, key=["N", "BLOCK_U"])


# --------------------------------------------------------------------------- launchers

_FN = "elementwise_qrnn_synth"


def _check(x, c_prev, w, b, v, b_out, dropout_mask) -> None:
    check_tensor(_FN, "x", x)
    if x.dim() != 1 or x.numel() < 1:
        raise ValueError(f"{_FN}: x must be [N] with N >= 1, got {tuple(x.shape)}")
    check_tensor(_FN, "c_prev", c_prev, dtype=x.dtype, device=x.device, ref="x")
    if c_prev.dim() != 2 or c_prev.shape[0] != x.shape[0] or c_prev.shape[1] < 1:
        raise ValueError(f"{_FN}: c_prev must be [N={x.shape[0]}, U], got {tuple(c_prev.shape)}")
    n, u = c_prev.shape
    if n * u >= 2**31:
        raise ValueError(f"{_FN}: N * U must be < 2**31, got {n} * {u}")
    check_tensor(_FN, "w", w, shape=(3, u), device=x.device, ref="x")
    for name, t, shape in (("b", b, (3, u)), ("v", v, (u,)), ("b_out", b_out, (1,))):
        check_tensor(_FN, name, t, shape=shape, dtype=w.dtype, device=x.device, ref="w")
    check_tensor(
        _FN, "dropout_mask", dropout_mask, shape=(n, u), device=x.device, optional=True, ref="x"
    )


def _block_u(u: int) -> int:
    return max(2, triton.next_power_of_2(u))


def elementwise_forward(
    x: torch.Tensor,
    c_prev: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    v: torch.Tensor,
    b_out: torch.Tensor,
    dropout_mask: torch.Tensor | None,
    *,
    meta: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward step. Returns (y [N], c [N, U]). ``meta`` forces a config."""
    _check(x, c_prev, w, b, v, b_out, dropout_mask)
    n, u = c_prev.shape
    args = [t.contiguous() for t in (x, c_prev, w, b, v, b_out)]
    args.append(None if dropout_mask is None else dropout_mask.contiguous())
    y = torch.empty((n,), dtype=x.dtype, device=x.device)
    c = torch.empty((n, u), dtype=c_prev.dtype, device=x.device)
    args += [y, c, n, u]
    block_u = _block_u(u)
    launch(
        "elementwise_fwd", _ew_fwd_kernel, _ew_fwd_tuned(x.device),
        key=tuning.make_key(x.dtype, n) + (block_u,), heuristic=lambda: _heuristic(n),
        grid=lambda m: (triton.cdiv(n, m["BLOCK_N"]),), args=args, meta=meta, BLOCK_U=block_u,
    )  # fmt: skip
    return y, c


def elementwise_backward(
    x: torch.Tensor,
    c_prev: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    v: torch.Tensor,
    b_out: torch.Tensor,
    dropout_mask: torch.Tensor | None,
    dy: torch.Tensor | None,
    dc: torch.Tensor | None,
    *,
    want_dc_prev: bool = True,
    meta: dict[str, int] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Launch the backward step; ``dy``/``dc`` None mean zeros (nothing allocated).

    Returns (dx, dc_prev or None, dw, db, dv, db_out), each in its input's dtype."""
    _check(x, c_prev, w, b, v, b_out, dropout_mask)
    n, u = c_prev.shape
    if dy is not None and tuple(dy.shape) != (n,):
        raise ValueError(f"elementwise_qrnn_synth: dy must be [{n}], got {tuple(dy.shape)}")
    if dc is not None and tuple(dc.shape) != (n, u):
        raise ValueError(f"elementwise_qrnn_synth: dc must be [{n}, {u}], got {tuple(dc.shape)}")
    chunk = tuning.round_up(tuning.cdiv(n, tuning.max_programs(x.device)), _CHUNK_ALIGN)
    programs = tuning.cdiv(n, chunk)
    dx = torch.empty((n,), dtype=x.dtype, device=x.device)
    dcp = torch.empty((n, u), dtype=c_prev.dtype, device=x.device) if want_dc_prev else None
    partial = torch.empty((programs, 8, u), dtype=torch.float32, device=x.device)
    args = [t.contiguous() for t in (x, c_prev, w, b, v)]
    args.append(None if dropout_mask is None else dropout_mask.contiguous())
    args += [None if g is None else g.contiguous() for g in (dy, dc)]
    args += [dx, dcp, partial, n, u, chunk]
    block_u = _block_u(u)
    launch(
        "elementwise_bwd", _ew_bwd_kernel, _ew_bwd_tuned(x.device),
        key=tuning.make_key(x.dtype, n) + (block_u,), heuristic=lambda: _heuristic(chunk),
        grid=lambda m: (programs,), args=args, meta=meta, BLOCK_U=block_u,
    )  # fmt: skip
    red = partial.sum(0)  # [8, U], a fixed-order reduction over P: deterministic
    dw = red[0:3].to(w.dtype)
    db = red[3:6].to(b.dtype)
    dv = red[6].to(v.dtype)
    db_out = red[7, :1].to(b_out.dtype)
    return dx, dcp, dw, db, dv, db_out


# --------------------------------------------------------------------------- autograd


class ElementwiseQrnnSynthFunction(torch.autograd.Function):
    """One synthesizer step; the backward recomputes the gates from the saved inputs."""

    @staticmethod
    def forward(ctx, x, c_prev, w, b, v, b_out, dropout_mask):
        y, c = elementwise_forward(x, c_prev, w, b, v, b_out, dropout_mask)
        ctx.save_for_backward(x, c_prev, w, b, v, b_out, dropout_mask)
        ctx.set_materialize_grads(False)
        return y, c

    @staticmethod
    def backward(ctx, dy, dc):
        x, c_prev, w, b, v, b_out, dropout_mask = ctx.saved_tensors
        dx, dcp, dw, db, dv, db_out = elementwise_backward(
            x, c_prev, w, b, v, b_out, dropout_mask, dy, dc, want_dc_prev=ctx.needs_input_grad[1]
        )
        return dx, dcp, dw, db, dv, db_out, None


# --------------------------------------------------------------------------- reference


def elementwise_qrnn_synth_reference(
    x: torch.Tensor,
    c_prev: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    v: torch.Tensor,
    b_out: torch.Tensor,
    dropout_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [N]; c_prev: [N, U]; w, b: [3, U] (rows z, f, o); v: [U]; b_out: [1];
    dropout_mask: [N, U] (already scaled by 1/(1-p)) or None, applied to h.

    Returns (y [N], c [N, U]).
    """
    pre = x.float()[:, None, None] * w.float() + b.float()  # [N, 3, U]
    z = torch.tanh(pre[:, 0])
    f = torch.sigmoid(pre[:, 1])
    o = torch.sigmoid(pre[:, 2])
    c = f * c_prev.float() + (1.0 - f) * z
    h = o * c
    if dropout_mask is not None:
        h = h * dropout_mask.float()
    y = h @ v.float() + b_out.float()
    return y.to(x.dtype), c.to(c_prev.dtype)


# --------------------------------------------------------------------------- public


def elementwise_qrnn_synth(
    x: torch.Tensor,
    c_prev: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    v: torch.Tensor,
    b_out: torch.Tensor,
    dropout_mask: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One element-wise synthesizer step, differentiable in every input but the mask.

    Args:
        x: [N] the scalars of the joined state (fp32, fp16 or bf16).
        c_prev: [N, U] the synthesizer's cell state, x's dtype.
        w, b: [3, U] input weights and biases, rows z, f, o.
        v: [U] output weights; b_out: [1] output bias (w, b, v, b_out share a dtype).
        dropout_mask: [N, U] mask on h, already scaled by 1/(1-p), or None.
        backend: "auto" (Triton on CUDA tensors, else the reference), "torch", "triton".

    Returns:
        (y [N] in x's dtype, c [N, U] in c_prev's dtype); computed in fp32.

    Raises:
        ValueError: on the Triton path, for a wrong shape, dtype or device (naming it).
    """
    if use_triton(backend, x, c_prev, w, b, v, b_out, dropout_mask):
        inputs = (x, c_prev, w, b, v, b_out)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            return ElementwiseQrnnSynthFunction.apply(x, c_prev, w, b, v, b_out, dropout_mask)
        return elementwise_forward(x, c_prev, w, b, v, b_out, dropout_mask)
    return elementwise_qrnn_synth_reference(x, c_prev, w, b, v, b_out, dropout_mask)
