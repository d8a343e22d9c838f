"""The authors' synthesizer's scan over the flattened state, as a multi-block parallel scan,
with the gate activations, the zoneout mask and the output gate fused.

    z_n = tanh(Z_n),  f_n = sigmoid(F_n) m_n,  o_n = sigmoid(O_n)
    c_n = (1 - f_n) c_{n-1} + f_n z_n,   h_n = o_n c_n

over N rows (the B*D scalars of the joined state, in order) of U units each. Z, F, O are
the column blocks of the gates' Linear output [N, 3U] (that GEMM stays cuBLAS's), read
in place through its strides; m is the zoneout multiplier: a 0/1 mask [N, U] in
training, the scalar 1 - p in eval, 1 without zoneout. This f weighs the *new* candidate
(pytorch-qrnn's); ``fo_pool``'s is 1 - it.

Why not ``fo_pool`` with layout [N, 1, U]: its programs own (batch row, unit block)
pairs and walk time in order, so with one batch row the whole N-step scan would run in
one or two programs, 109k steps one after another on one SM at the paper's shape (B = 20,
D = 5,450, U = 50); and its gates cannot express zoneout (f = 0 needs F = +inf; the eval
scale 1 - p is no sigmoid of anything). What it does share is reused: the scan's
combine functions (``_scan``'s ``_compose`` and ``_compose_keep_prev``, whose "map before
the last step" gives c_{n-1} and w_{n+1} without shifting a tile) and the checkpoint-free
recompute of c in the backward.

Design (reduce, carry, fix-up): N is cut into blocks of BLOCK_N rows; a program owns one
block and BLOCK_U units.

* forward: (1) every block scans its rows from zero and stores its aggregate map
  c -> A c + B per unit; (2) one small pass per unit block scans the aggregates in order
  from c0 (tiles of CARRY_ROWS blocks, carrying between tiles) and stores the c entering
  each block, and c_N; (3) every block rescans its rows from that c and writes h = o c.
* backward: with w_n = dL/dc_{n-1} through step n, w_n = a_n (d_n + w_{n+1}), d_n = dh_n
  o_n, w_N = dL/dc_N: (1) every block stores both its forward aggregate and its reverse
  aggregate (the map w_{end} -> w_{start}); (2) a forward carry pass (the c entering each
  block, recomputed: the forward saves nothing but its inputs) and a reverse one (the w
  entering each block from the right; its final value is dc0 = w_0); (3) every block
  recomputes c_n and c_{n-1}, scans w in reverse from its carry, and writes
  g_n = d_n + w_{n+1} into

      dZ = g f (1 - z^2),  dF = g (z - c_{n-1}) m s (1 - s),  dO = dh c o (1 - o)

  with s = sigmoid(F), as one [N, 3U] gradient of the gates' output.

Bytes per (n, u) element, s = storage bytes of the gates (the mask in the same dtype):
forward reads Z, F, m in (1) and Z, F, O, m in (3), writes h: 8s; backward reads Z, F,
O, m, dh in (1) and in (3), writes dZ, dF, dO: 13s. The aggregates are 2-4 fp32 values
per block and unit (BLOCK_N times fewer). At the paper's shape in fp32 (5.45M elements)
that is 174 MB forward and 283 MB backward, about 52 and 85 us at an H100's 3.35 TB/s;
the PyTorch path (``linear_scan``) runs about 2 sqrt(N) = 660 dependent steps of a few
small kernels each way. Not timed on a GPU yet: ``altgrad-bench --families authors_scan``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import arch, tuning
from ._common import check_tensor, sigmoid, tanh
from ._dispatch import use_triton
from ._scan import _compose, _compose_keep_prev

# --------------------------------------------------------------------------- kernels


@triton.jit
def _tile(x, keep, n0, u0, N, U, sxn, sxu, f_scale, HAS_KEEP: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_U: tl.constexpr):  # fmt: skip
    """One block's rows and units: (offsets into [N, U], mask, z, s = sigmoid(F), the
    zoneout multiplier m, the raw O), activations in fp32, padding masked."""
    rows = n0 + tl.arange(0, BLOCK_N)
    cols = u0 + tl.arange(0, BLOCK_U)
    m = (rows[:, None] < N) & (cols[None, :] < U)
    px = x + rows[:, None].to(tl.int64) * sxn + cols[None, :].to(tl.int64) * sxu
    z = tanh(tl.load(px, mask=m, other=0.0).to(tl.float32))
    s = sigmoid(tl.load(px + U * sxu, mask=m, other=0.0).to(tl.float32))
    ox = tl.load(px + 2 * U * sxu, mask=m, other=0.0).to(tl.float32)
    plane = rows[:, None].to(tl.int64) * U + cols[None, :]
    if HAS_KEEP:
        mult = tl.load(keep + plane, mask=m, other=0.0).to(tl.float32) * f_scale
    else:
        mult = tl.full(z.shape, 1.0, tl.float32) * f_scale
    return plane, m, z, s, mult, ox


@triton.jit
def _edge(a, b, FIRST: tl.constexpr, ROWS: tl.constexpr):
    """Row 0 (FIRST) or the last row of two [ROWS, cols] tiles, as [cols] vectors."""
    pick = tl.arange(0, ROWS)[:, None] == (0 if FIRST else ROWS - 1)
    return tl.sum(tl.where(pick, a, 0.0), axis=0), tl.sum(tl.where(pick, b, 0.0), axis=0)


@triton.jit
def _fwd_reduce_kernel(x, keep, agg_a, agg_b, N, U, sxn, sxu, f_scale,
                       HAS_KEEP: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_U: tl.constexpr):  # fmt: skip
    """(1) of the forward: each block's map c_{start-1} -> c_{end} per unit, [K, U] fp32."""
    blk, u0 = tl.program_id(0), tl.program_id(1) * BLOCK_U
    _, m, z, s, mult, _ = _tile(x, keep, blk * BLOCK_N, u0, N, U, sxn, sxu, f_scale,
                                HAS_KEEP, BLOCK_N, BLOCK_U)  # fmt: skip
    f = s * mult
    ca, cb = tl.associative_scan((tl.where(m, 1.0 - f, 1.0), tl.where(m, f * z, 0.0)), 0,
                                 _compose)  # fmt: skip
    A, B = _edge(ca, cb, False, BLOCK_N)
    cols = u0 + tl.arange(0, BLOCK_U)
    out = blk.to(tl.int64) * U + cols
    tl.store(agg_a + out, A, mask=cols < U)
    tl.store(agg_b + out, B, mask=cols < U)


@triton.jit
def _carry_kernel(agg_a, agg_b, seed, carry, final, K, U, HAS_SEED: tl.constexpr,
                  REVERSE: tl.constexpr, BLOCK_K: tl.constexpr,
                  BLOCK_U: tl.constexpr):  # fmt: skip
    """(2): scan the K block maps per unit from ``seed`` (zeros without), in order or in
    REVERSE; store the value entering each block (carry [K, U]) and the last (final [U])."""
    cols = tl.program_id(0) * BLOCK_U + tl.arange(0, BLOCK_U)
    cm = cols < U
    if HAS_SEED:
        c = tl.load(seed + cols, mask=cm, other=0.0).to(tl.float32)
    else:
        c = tl.zeros([BLOCK_U], dtype=tl.float32)
    ks = tl.arange(0, BLOCK_K)
    one = tl.full([BLOCK_K, BLOCK_U], 1.0, tl.float32)
    zero = tl.zeros([BLOCK_K, BLOCK_U], dtype=tl.float32)
    tiles = tl.cdiv(K, BLOCK_K)
    for i in range(tiles):
        t = tiles - 1 - i if REVERSE else i
        k = t * BLOCK_K + ks
        mk = (k[:, None] < K) & cm[None, :]
        at = k[:, None].to(tl.int64) * U + cols[None, :]
        a = tl.load(agg_a + at, mask=mk, other=1.0)  # past K: the identity map
        b = tl.load(agg_b + at, mask=mk, other=0.0)
        ca, cb, cp, cq = tl.associative_scan((a, b, one, zero), 0, _compose_keep_prev,
                                             reverse=REVERSE)  # fmt: skip
        tl.store(carry + at, cp * c[None, :] + cq, mask=mk)
        A, B = _edge(ca, cb, REVERSE, BLOCK_K)
        c = A * c + B
    tl.store(final + cols, c.to(final.dtype.element_ty), mask=cm)


@triton.jit
def _fwd_kernel(x, keep, carry, h, N, U, sxn, sxu, f_scale, HAS_KEEP: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_U: tl.constexpr):  # fmt: skip
    """(3) of the forward: rescan the block from the c entering it; h = o c."""
    blk, u0 = tl.program_id(0), tl.program_id(1) * BLOCK_U
    plane, m, z, s, mult, ox = _tile(x, keep, blk * BLOCK_N, u0, N, U, sxn, sxu, f_scale,
                                     HAS_KEEP, BLOCK_N, BLOCK_U)  # fmt: skip
    f = s * mult
    ca, cb = tl.associative_scan((tl.where(m, 1.0 - f, 1.0), tl.where(m, f * z, 0.0)), 0,
                                 _compose)  # fmt: skip
    cols = u0 + tl.arange(0, BLOCK_U)
    cin = tl.load(carry + blk.to(tl.int64) * U + cols, mask=cols < U, other=0.0)
    c = ca * cin[None, :] + cb
    tl.store(h + plane, (sigmoid(ox) * c).to(h.dtype.element_ty), mask=m)


@triton.jit
def _bwd_reduce_kernel(x, keep, dh, fwd_a, fwd_b, rev_a, rev_b, N, U, sxn, sxu, f_scale,
                       HAS_KEEP: tl.constexpr, HAS_DH: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_U: tl.constexpr):  # fmt: skip
    """(1) of the backward: each block's forward map and its reverse map w_end -> w_start,
    w_n = a_n w_{n+1} + a_n d_n."""
    blk, u0 = tl.program_id(0), tl.program_id(1) * BLOCK_U
    plane, m, z, s, mult, ox = _tile(x, keep, blk * BLOCK_N, u0, N, U, sxn, sxu, f_scale,
                                     HAS_KEEP, BLOCK_N, BLOCK_U)  # fmt: skip
    f = s * mult
    a = tl.where(m, 1.0 - f, 1.0)
    ca, cb = tl.associative_scan((a, tl.where(m, f * z, 0.0)), 0, _compose)
    cols = u0 + tl.arange(0, BLOCK_U)
    out = blk.to(tl.int64) * U + cols
    A, B = _edge(ca, cb, False, BLOCK_N)
    tl.store(fwd_a + out, A, mask=cols < U)
    tl.store(fwd_b + out, B, mask=cols < U)
    if HAS_DH:
        d = tl.load(dh + plane, mask=m, other=0.0).to(tl.float32) * sigmoid(ox)
    else:
        d = tl.zeros(a.shape, dtype=tl.float32)
    wa, wb = tl.associative_scan((a, a * d), 0, _compose, reverse=True)
    A, B = _edge(wa, wb, True, BLOCK_N)
    tl.store(rev_a + out, A, mask=cols < U)
    tl.store(rev_b + out, B, mask=cols < U)


@triton.jit
def _bwd_kernel(x, keep, dh, c_in, w_in, dx, N, U, sxn, sxu, f_scale,
                HAS_KEEP: tl.constexpr, HAS_DH: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_U: tl.constexpr):  # fmt: skip
    """(3) of the backward: c_n and c_{n-1} from the c entering the block, w_{n+1} from
    the w entering it from the right; dZ, dF, dO into dx [N, 3U] (contiguous)."""
    blk, u0 = tl.program_id(0), tl.program_id(1) * BLOCK_U
    plane, m, z, s, mult, ox = _tile(x, keep, blk * BLOCK_N, u0, N, U, sxn, sxu, f_scale,
                                     HAS_KEEP, BLOCK_N, BLOCK_U)  # fmt: skip
    f = s * mult
    o = sigmoid(ox)
    a = tl.where(m, 1.0 - f, 1.0)
    one = tl.full(a.shape, 1.0, tl.float32)
    zero = tl.zeros(a.shape, dtype=tl.float32)
    cols = u0 + tl.arange(0, BLOCK_U)
    at = blk.to(tl.int64) * U + cols
    cin = tl.load(c_in + at, mask=cols < U, other=0.0)
    ca, cb, cp, cq = tl.associative_scan((a, tl.where(m, f * z, 0.0), one, zero), 0,
                                         _compose_keep_prev)  # fmt: skip
    c = ca * cin[None, :] + cb
    c_prev = cp * cin[None, :] + cq
    dht = tl.load(dh + plane, mask=m, other=0.0).to(tl.float32) if HAS_DH else zero
    d = dht * o
    win = tl.load(w_in + at, mask=cols < U, other=0.0)
    _, _, wp, wq = tl.associative_scan((a, a * d, one, zero), 0, _compose_keep_prev,
                                       reverse=True)  # fmt: skip
    g = d + wp * win[None, :] + wq  # dL/dc_n: through h_n and through c_{n+1}
    rows = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    pdx = dx + rows[:, None].to(tl.int64) * (3 * U) + cols[None, :]
    ty = dx.dtype.element_ty
    tl.store(pdx, (g * f * (1.0 - z * z)).to(ty), mask=m)
    tl.store(pdx + U, (g * (z - c_prev) * mult * s * (1.0 - s)).to(ty), mask=m)
    tl.store(pdx + 2 * U, (dht * c * o * (1.0 - o)).to(ty), mask=m)


# --------------------------------------------------------------------------- configs

CARRY_ROWS = 128
"""Block aggregates per tile of the carry pass (a [CARRY_ROWS, CARRY_UNITS] scan per loop
trip on 4 warps: 16 per thread; at the paper's shape about 1,700 blocks, 14 trips)."""
CARRY_UNITS = 16


def _configs(least: int, most: int, blocks: tuple[int, ...]) -> list[dict[str, int]]:
    """``blocks`` rows by 32 or 64 units on 2-8 warps, ``least`` to ``most`` elements of
    each tile per thread."""
    out = []
    for rows in blocks:
        for units in (32, 64):
            for w in (2, 4, 8):
                if least <= rows * units // (32 * w) <= most:
                    out.append({"BLOCK_N": rows, "BLOCK_U": units, "num_warps": w})
    return [{**m, "num_stages": 1} for m in out]


def configs_authors_scan_fwd(target: arch.Where = None) -> list[dict[str, int]]:
    """Forward candidates on ``target`` (see ``tuning.candidates``; its reduce and fix-up
    run the same tile): 32-128 rows, 8 to 16 elements of each tile per thread. At the
    paper's N = 109,000 that is 850-3,400 blocks."""
    return tuning.candidates("authors_scan_fwd", target)


def configs_authors_scan_bwd(target: arch.Where = None) -> list[dict[str, int]]:
    """Backward candidates on ``target``: about twice the forward's live tiles (dh, c_{n-1},
    two four-part scans), so 4 to 8 elements per thread, 16-64 rows."""
    return tuning.candidates("authors_scan_bwd", target)


_FWD_SPILLED: arch.Measured = {
    "sm_80": {"3.6": {(32, 64, 8)}, "3.9": {(32, 64, 8)}},
    "sm_86": {"3.6": {(128, 32, 8)}, "3.9": {(128, 32, 8)}},
    "sm_89": {"3.6": {(128, 32, 8)}, "3.9": {(128, 32, 8)}},
}
"""(BLOCK_N, BLOCK_U, num_warps) of forward tiles that spilled 8-16 B per thread there
(``altgrad-tune --check-configs``): not offered on that architecture with that Triton."""


def _fwd_configs(limits: arch.Limits) -> list[dict[str, int]]:
    """The forward's candidates on ``limits``: less what spilled on its architecture
    (``_FWD_SPILLED``; the scans take at most 32 KB of shared memory, which every supported
    GPU has)."""
    spilled = arch.measured_failures(_FWD_SPILLED, limits)
    return [m for m in _configs(8, 16, (32, 64, 128))
            if (m["BLOCK_N"], m["BLOCK_U"], m["num_warps"]) not in spilled]  # fmt: skip


def _bwd_configs(limits: arch.Limits) -> list[dict[str, int]]:
    """The backward's candidates on ``limits``: the same on every supported GPU."""
    return _configs(4, 8, (16, 32, 64))


def _heuristic(rows: int, units: int) -> dict[str, int]:
    """Under the interpreter (and the GPU kernel tests): 16-row blocks, so that small test
    shapes span several blocks; on a GPU without a tuned choice, a mid candidate."""
    return {"BLOCK_N": 16, "BLOCK_U": min(64, max(4, triton.next_power_of_2(units))),
            "num_warps": 4}  # fmt: skip


_GPU_DEFAULT = {
    "authors_scan_fwd": {"BLOCK_N": 64, "BLOCK_U": 64, "num_warps": 8, "num_stages": 1},
    "authors_scan_bwd": {"BLOCK_N": 32, "BLOCK_U": 64, "num_warps": 8, "num_stages": 1},
}
"""Used on a GPU when nothing is tuned for the shape (no autotune: the reduce and the
fix-up of one direction must run one tile, which one autotuned launch cannot promise).
Each is a candidate on every supported GPU (``altgrad-tune --check-configs`` compiles them
all for each)."""

tuning.register("authors_scan_fwd", _fwd_configs)
tuning.register("authors_scan_bwd", _bwd_configs)


def _meta(kernel: str, gates: torch.Tensor, units: int) -> dict[str, int]:
    """The tile for ``kernel`` (a forced choice > the interpreter's heuristic > the GPU
    default), keyed on the gates' dtype and the number of elements N*U."""
    key = tuning.make_key(gates.dtype, gates.shape[0] * units)
    meta = tuning.pick(kernel, key, lambda: _heuristic(gates.shape[0], units))
    return dict(meta or _GPU_DEFAULT[kernel])


# --------------------------------------------------------------------------- launchers


def _check(gates, c0, keep, f_scale) -> tuple[int, int]:
    """Validate the inputs (one ValueError naming the bad one); return (N, U)."""
    fn = "authors_scan"
    check_tensor(fn, "gates", gates)
    if gates.dim() != 2 or gates.shape[0] < 1 or gates.shape[1] < 3 or gates.shape[1] % 3:
        raise ValueError(f"{fn}: gates must be a non-empty [N, 3U], got shape {tuple(gates.shape)}")
    n, units = gates.shape[0], gates.shape[1] // 3
    same = {"device": gates.device, "ref": "gates"}
    check_tensor(fn, "c0", c0, shape=(units,), optional=True, **same)
    check_tensor(fn, "keep", keep, shape=(n, units), optional=True, **same)
    if not 0.0 <= f_scale <= 1.0:
        raise ValueError(f"{fn}: f_scale must be in [0, 1], got {f_scale}")
    return n, units


def _carry(agg_a, agg_b, seed, final_dtype, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(2): the value entering each block [K, U] fp32 and the final value [U]."""
    K, U = agg_a.shape
    carry = torch.empty_like(agg_a)
    final = torch.empty(U, dtype=final_dtype, device=agg_a.device)
    rows = min(CARRY_ROWS, triton.next_power_of_2(K))
    units = min(CARRY_UNITS, triton.next_power_of_2(U))
    _carry_kernel[(triton.cdiv(U, units),)](
        agg_a, agg_b, seed, carry, final, K, U, HAS_SEED=seed is not None, REVERSE=reverse,
        BLOCK_K=rows, BLOCK_U=units, num_warps=4,
    )  # fmt: skip
    return carry, final


def authors_scan_forward(
    gates: torch.Tensor, c0: torch.Tensor | None, keep: torch.Tensor | None, f_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward: (h [N, U] in the gates' dtype, c_N [U] in c0's, else the gates')."""
    n, units = _check(gates, c0, keep, f_scale)
    meta = _meta("authors_scan_fwd", gates, units)
    bn, bu = meta.pop("BLOCK_N"), meta.pop("BLOCK_U")
    grid = (triton.cdiv(n, bn), triton.cdiv(units, bu))
    keep = None if keep is None else keep.contiguous()
    agg = [torch.empty(grid[0], units, dtype=torch.float32, device=gates.device) for _ in "ab"]
    common = (n, units, *gates.stride(), float(f_scale))
    consts = {"HAS_KEEP": keep is not None, "BLOCK_N": bn, "BLOCK_U": bu, **meta}
    _fwd_reduce_kernel[grid](gates, keep, *agg, *common, **consts)
    state = gates.dtype if c0 is None else c0.dtype
    carry, c_last = _carry(*agg, None if c0 is None else c0.contiguous(), state, reverse=False)
    h = torch.empty(n, units, dtype=gates.dtype, device=gates.device)
    _fwd_kernel[grid](gates, keep, carry, h, *common, **consts)
    return h, c_last


def authors_scan_backward(
    gates: torch.Tensor,
    c0: torch.Tensor | None,
    keep: torch.Tensor | None,
    f_scale: float,
    dh: torch.Tensor | None,
    dc_last: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward: (d gates [N, 3U] contiguous in the gates' dtype, dc0 [U] fp32).
    ``dh``/``dc_last`` None mean zeros."""
    n, units = _check(gates, c0, keep, f_scale)
    meta = _meta("authors_scan_bwd", gates, units)
    bn, bu = meta.pop("BLOCK_N"), meta.pop("BLOCK_U")
    grid = (triton.cdiv(n, bn), triton.cdiv(units, bu))
    keep = None if keep is None else keep.contiguous()
    dh = None if dh is None else dh.contiguous()
    aggs = [torch.empty(grid[0], units, dtype=torch.float32, device=gates.device) for _ in "abcd"]
    common = (n, units, *gates.stride(), float(f_scale))
    consts = {"HAS_KEEP": keep is not None, "HAS_DH": dh is not None, "BLOCK_N": bn,
              "BLOCK_U": bu, **meta}  # fmt: skip
    _bwd_reduce_kernel[grid](gates, keep, dh, *aggs, *common, **consts)
    seed = None if c0 is None else c0.contiguous()
    c_in, _ = _carry(aggs[0], aggs[1], seed, torch.float32, reverse=False)
    seed = None if dc_last is None else dc_last.contiguous()
    w_in, dc0 = _carry(aggs[2], aggs[3], seed, torch.float32, reverse=True)
    dx = torch.empty(n, 3 * units, dtype=gates.dtype, device=gates.device)
    _bwd_kernel[grid](gates, keep, dh, c_in, w_in, dx, *common, **consts)
    return dx, dc0


# --------------------------------------------------------------------------- autograd


class AuthorsScanFunction(torch.autograd.Function):
    """Triton forward and backward; saves only its inputs (the backward recomputes c)."""

    @staticmethod
    def forward(ctx, gates, c0, keep, f_scale):
        h, c_last = authors_scan_forward(gates, c0, keep, f_scale)
        ctx.save_for_backward(gates, c0, keep)
        ctx.f_scale = f_scale
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None
        return h, c_last

    @staticmethod
    def backward(ctx, dh, dc_last):
        gates, c0, keep = ctx.saved_tensors
        dgates, dc0 = authors_scan_backward(gates, c0, keep, ctx.f_scale, dh, dc_last)
        dc0 = None if c0 is None or not ctx.needs_input_grad[1] else dc0.to(c0.dtype)
        return dgates, dc0, None, None


# --------------------------------------------------------------------------- reference


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
    a_j, b_j = (t.reshape(chunks, size, u).unbind(1) for t in (a, b))
    local, prod = [b_j[0]], [a_j[0]]
    for j in range(1, size):
        local.append(a_j[j] * local[-1] + b_j[j])
        prod.append(prod[-1] * a_j[j])
    ends, decays = local[-1].unbind(0), prod[-1].unbind(0)  # each chunk's last step
    starts = [c0.to(local[0].dtype)]
    for k in range(chunks - 1):
        starts.append(decays[k] * starts[-1] + ends[k])
    start = torch.stack(starts).unsqueeze(1)  # [K, 1, U]
    c = torch.stack(local, 1) + torch.stack(prod, 1) * start
    return c.reshape(chunks * size, u)[:n]


def authors_gates(
    gates: torch.Tensor, keep: torch.Tensor | None = None, f_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, f, o) from the gates' output [..., 3U] in PyTorch: tanh, sigmoid, sigmoid, then f
    times the zoneout ``keep`` mask (training) and/or ``f_scale`` (1 - p in eval)."""
    z, f, o = gates.chunk(3, dim=-1)
    z, f, o = torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o)
    if keep is not None:
        f = f * keep
    if f_scale != 1.0:
        f = f * f_scale
    return z, f, o


def authors_scan_reference(
    gates: torch.Tensor,
    c0: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    *,
    f_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan in PyTorch through autograd (:func:`linear_scan`): the CPU path, the
    synthesizer's code before the kernels, and the test oracle."""
    z, f, o = authors_gates(gates, keep, f_scale)
    if c0 is None:
        c0 = gates.new_zeros(gates.shape[1] // 3)
    c = linear_scan(1 - f, f * z, c0)
    return o * c, c[-1]


# --------------------------------------------------------------------------- public


def authors_scan(
    gates: torch.Tensor,
    c0: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    *,
    f_scale: float = 1.0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' QRNN layer over N rows read as one sequence, differentiable in
    ``gates`` and ``c0``.

    Args:
        gates: [N, 3U] the gates' Linear output, column blocks Z | F | O (tanh, sigmoid,
            sigmoid applied here); fp32, fp16 or bf16; any strides (read in place).
        c0: [U] the cell state before row 0, or None for zeros.
        keep: [N, U] zoneout's 0/1 mask on f (training), or None.
        f_scale: a scalar on f (zoneout's 1 - p in eval; 1 otherwise).
        backend: "auto" (Triton on CUDA tensors, else the reference), "torch", "triton".

    Returns:
        (h [N, U] = o c in the gates' dtype, c_N [U] in c0's dtype, else the gates');
        activations and scan in fp32 on the Triton path. The gradient of ``gates`` comes
        back as one [N, 3U] tensor.

    Raises:
        ValueError: on the Triton path, for a wrong shape, dtype or device (naming it).
    """
    if use_triton(backend, gates, c0, keep):
        wants_grad = gates.requires_grad or (c0 is not None and c0.requires_grad)
        if torch.is_grad_enabled() and wants_grad:
            return AuthorsScanFunction.apply(gates, c0, keep, float(f_scale))
        return authors_scan_forward(gates, c0, keep, float(f_scale))
    return authors_scan_reference(gates, c0, keep, f_scale=f_scale)
