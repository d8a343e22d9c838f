"""QRNN fo-pooling with the gate activations fused: from the raw projection to h.

    z_t = tanh(Z_t),  f_t = sigmoid(F_t),  o_t = sigmoid(O_t)
    c_t = f_t c_{t-1} + (1 - f_t) z_t,   h_t = o_t c_t   (h_t = c_t without an output gate)

Z, F, O are the column blocks of the layer's projection ``gates`` [T, B, 3H] (Z | F | O, or
Z | F without an output gate); the kernels read them in place through its strides and apply
tanh/sigmoid themselves, and the backward writes the gradient of the whole projection,
[T, B, 3H], in one tensor: no activation kernels, no chunk views, no concatenation.

Design: the recurrence is a first-order linear scan. Steps compose as maps x -> a x + b
with (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2), so a chunk of steps is scanned in
parallel with ``tl.associative_scan``. One program owns one batch row and BLOCK_H hidden
units (columns contiguous in the projection) and walks time in chunks of CHUNK steps: it
issues the next chunk's loads before this chunk's arithmetic, scans the chunk, and carries
the chunk's last c into the next. Each program therefore has CHUNK x BLOCK_H elements of
each gate in flight instead of one step's, which is what the sequential kernel lacked: it
was latency-bound at 0.75-1.4 TB/s (about 0.5 us per time step whatever the width).

The backward walks the chunks in reverse. Within a chunk it recomputes c from the fp32 c
the forward saved at the chunk's start (a checkpoint every CHUNK steps: no c sequence, no
division by f), then runs the reverse scan of the gradient that reaches c_{t-1} through
step t, w_t = f_t (d_t + w_{t+1}) with d_t = dh_t o_t and w_T = dL/dc_T. Both scans also
carry "everything but the last step" so that c_{t-1} and w_{t+1} come out of the same scan
without shifting a tile (see ``_scan._compose_keep_prev``). Then g_t = d_t + w_{t+1} and

    dZ = g (1 - f) (1 - z^2),  dF = g (c_{t-1} - z) f (1 - f),  dO = dh c_t o (1 - o),
    dc0 = w_0.

The backward's chunk is at least the forward's (its checkpoints mark where a chunk may
start); a tuned backward CHUNK below the forward's runs at the forward's.

The bytes each direction moves per element, and why the bound is bandwidth at H=1550:
docs/kernels.md ("fo-pooling: bytes moved").
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import arch, tuning
from ._common import check_tensor, launch, sigmoid, tanh
from ._dispatch import use_triton
from ._scan import _compose, _compose_keep_prev

# --------------------------------------------------------------------------- kernels


@triton.heuristics(
    {
        "HAS_C0": lambda a: a["c0"] is not None,
        "STORE_CKPT": lambda a: a["ckpt"] is not None,
    }
)
@triton.jit(do_not_specialize=["T"])
def _fo_pool_fwd_kernel(
    x,  # [T, B, G*H] raw pre-activations Z | F (| O), strides (sxt, sxb, sxh)
    c0,  # [B, H] contiguous initial state, or None (zeros)
    h,  # [T, B, H] contiguous output, x's dtype
    ckpt,  # [>= cdiv(T, CHUNK), B, H] contiguous fp32: c entering each chunk, or None
    c_last,  # [B, H] contiguous final state
    T,  # sequence length (runtime: not a specialisation key)
    B,
    H,
    sxt,
    sxb,
    sxh,
    HAS_O: tl.constexpr,  # an output gate block O follows Z and F
    HAS_C0: tl.constexpr,
    STORE_CKPT: tl.constexpr,
    BLOCK_H: tl.constexpr,  # hidden units per program
    CHUNK: tl.constexpr,  # time steps per scanned tile
):
    pid = tl.program_id(0)
    nh = tl.cdiv(H, BLOCK_H)
    b = pid // nh
    cols = (pid % nh) * BLOCK_H + tl.arange(0, BLOCK_H)
    cmask = cols < H
    rows = tl.arange(0, CHUNK)
    last_row = rows[:, None] == CHUNK - 1
    BH = B * H
    plane = b * H + cols  # offset of (b, cols) inside a [B, H] plane
    # 64-bit element offsets: T * B * 3H may pass 2^31 in a long segment
    xcol = b.to(tl.int64) * sxb + cols[None, :].to(tl.int64) * sxh
    xf = H * sxh  # from a Z column to its F column (and F to O)
    if HAS_C0:
        c = tl.load(c0 + plane, mask=cmask, other=0.0).to(tl.float32)
    else:
        c = tl.zeros([BLOCK_H], dtype=tl.float32)
    # the first chunk's loads
    tt = rows[:, None].to(tl.int64)
    m = (tt < T) & cmask[None, :]
    px = x + tt * sxt + xcol
    zx = tl.load(px, mask=m, other=0.0)
    fx = tl.load(px + xf, mask=m, other=0.0)
    if HAS_O:
        ox = tl.load(px + 2 * xf, mask=m, other=0.0)
    for t0 in range(0, T, CHUNK):
        mc = m
        zc = zx.to(tl.float32)
        fc = fx.to(tl.float32)
        if HAS_O:
            oc = ox.to(tl.float32)
        # issue the next chunk's loads before this chunk's arithmetic (none past T - 1)
        tt = (t0 + CHUNK + rows[:, None]).to(tl.int64)
        m = (tt < T) & cmask[None, :]
        px = x + tt * sxt + xcol
        zx = tl.load(px, mask=m, other=0.0)
        fx = tl.load(px + xf, mask=m, other=0.0)
        if HAS_O:
            ox = tl.load(px + 2 * xf, mask=m, other=0.0)
        if STORE_CKPT:
            tl.store(ckpt + (t0 // CHUNK) * BH + plane, c, mask=cmask)
        f = sigmoid(fc)
        # steps past T - 1 are the identity map, so the last row is c at step T - 1
        a = tl.where(mc, f, 1.0)
        bb = tl.where(mc, (1.0 - f) * tanh(zc), 0.0)
        ca, cb = tl.associative_scan((a, bb), 0, _compose)
        cs = ca * c[None, :] + cb
        out = sigmoid(oc) * cs if HAS_O else cs
        th = (t0 + rows[:, None]).to(tl.int64)
        tl.store(h + th * BH + plane[None, :], out.to(h.dtype.element_ty), mask=mc)
        c = tl.sum(tl.where(last_row, cs, 0.0), axis=0)
    tl.store(c_last + plane, c.to(c_last.dtype.element_ty), mask=cmask)


@triton.heuristics(
    {
        "HAS_DH": lambda a: a["dh"] is not None,
        "HAS_DC": lambda a: a["dc_last"] is not None,
        "STORE_DC0": lambda a: a["dc0"] is not None,
        # the backward's chunks must start on the forward's checkpoints
        "STEPS": lambda a: max(a["CHUNK"], a["CKPT_EVERY"]),
    }
)
@triton.jit(do_not_specialize=["T"])
def _fo_pool_bwd_kernel(
    x,  # [T, B, G*H] raw pre-activations Z | F (| O), strides (sxt, sxb, sxh)
    ckpt,  # [>= cdiv(T, CKPT_EVERY), B, H] contiguous fp32 c entering each forward chunk
    dh,  # [T, B, H] contiguous upstream gradient of h, or None (zeros)
    dc_last,  # [B, H] contiguous upstream gradient of c_T, or None (zeros)
    dx,  # [T, B, G*H] contiguous output: gradient of the pre-activations, x's dtype
    dc0,  # [B, H] contiguous output, or None (not wanted)
    T,  # sequence length (runtime: not a specialisation key)
    B,
    H,
    sxt,
    sxb,
    sxh,
    HAS_O: tl.constexpr,
    CKPT_EVERY: tl.constexpr,  # the forward's CHUNK: steps between checkpoints
    HAS_DH: tl.constexpr,
    HAS_DC: tl.constexpr,
    STORE_DC0: tl.constexpr,
    BLOCK_H: tl.constexpr,
    CHUNK: tl.constexpr,  # the tuned chunk; STEPS = max(CHUNK, CKPT_EVERY) runs
    STEPS: tl.constexpr,
):
    pid = tl.program_id(0)
    nh = tl.cdiv(H, BLOCK_H)
    b = pid // nh
    cols = (pid % nh) * BLOCK_H + tl.arange(0, BLOCK_H)
    cmask = cols < H
    rows = tl.arange(0, STEPS)
    first_row = rows[:, None] == 0
    BH = B * H
    GH = 3 * H if HAS_O else 2 * H
    plane = b * H + cols
    dplane = b * GH + cols  # offset of (b, cols) in a [B, G*H] plane of dx
    xcol = b.to(tl.int64) * sxb + cols[None, :].to(tl.int64) * sxh
    xf = H * sxh
    if HAS_DC:
        w = tl.load(dc_last + plane, mask=cmask, other=0.0).to(tl.float32)
    else:
        w = tl.zeros([BLOCK_H], dtype=tl.float32)
    n_chunks = tl.cdiv(T, STEPS)
    # the last chunk's loads
    t0 = (n_chunks - 1) * STEPS
    tt = (t0 + rows[:, None]).to(tl.int64)
    m = (tt < T) & cmask[None, :]
    px = x + tt * sxt + xcol
    zx = tl.load(px, mask=m, other=0.0)
    fx = tl.load(px + xf, mask=m, other=0.0)
    if HAS_O:
        ox = tl.load(px + 2 * xf, mask=m, other=0.0)
    if HAS_DH:
        dhx = tl.load(dh + tt * BH + plane[None, :], mask=m, other=0.0)
    cx = tl.load(ckpt + (t0 // CKPT_EVERY) * BH + plane, mask=cmask, other=0.0)
    for i in range(n_chunks):
        t0 = (n_chunks - 1 - i) * STEPS
        mc = m
        ttc = tt
        z = tanh(zx.to(tl.float32))
        f = sigmoid(fx.to(tl.float32))
        if HAS_O:
            o = sigmoid(ox.to(tl.float32))
        if HAS_DH:
            dht = dhx.to(tl.float32)
        c_start = cx
        # issue the previous chunk's loads before this chunk's arithmetic (none before 0)
        tt = (t0 - STEPS + rows[:, None]).to(tl.int64)
        m = (tt >= 0) & cmask[None, :]
        px = x + tt * sxt + xcol
        zx = tl.load(px, mask=m, other=0.0)
        fx = tl.load(px + xf, mask=m, other=0.0)
        if HAS_O:
            ox = tl.load(px + 2 * xf, mask=m, other=0.0)
        if HAS_DH:
            dhx = tl.load(dh + tt * BH + plane[None, :], mask=m, other=0.0)
        prev_ckpt = tl.maximum(t0 - STEPS, 0) // CKPT_EVERY
        cx = tl.load(ckpt + prev_ckpt * BH + plane, mask=cmask, other=0.0)
        # recompute c_t and c_{t-1} from the checkpoint (steps past T - 1: identity)
        a = tl.where(mc, f, 1.0)
        one = tl.full(a.shape, 1.0, tl.float32)
        zero = tl.zeros(a.shape, tl.float32)
        ca, cb, cp, cq = tl.associative_scan(
            (a, tl.where(mc, (1.0 - f) * z, 0.0), one, zero), 0, _compose_keep_prev
        )
        c_t = ca * c_start[None, :] + cb
        c_prev = cp * c_start[None, :] + cq
        # d_t: what reaches c_t from h_t
        d = (dht * o if HAS_O else dht) if HAS_DH else zero
        # reverse scan of w_t = f_t (d_t + w_{t+1}), seeded with w after this chunk
        wa, wb, wp, wq = tl.associative_scan(
            (a, tl.where(mc, f * d, 0.0), one, zero), 0, _compose_keep_prev, reverse=True
        )
        g = d + wp * w[None, :] + wq  # d_t + w_{t+1}: dL/dc_t
        w_new = wa * w[None, :] + wb  # w_t = f_t g_t: what reaches c_{t-1}
        w = tl.sum(tl.where(first_row, w_new, 0.0), axis=0)
        pdx = dx + ttc * (B * GH) + dplane[None, :]
        dz = g * (1.0 - f) * (1.0 - z * z)
        df = g * (c_prev - z) * f * (1.0 - f)
        tl.store(pdx, dz.to(dx.dtype.element_ty), mask=mc)
        tl.store(pdx + H, df.to(dx.dtype.element_ty), mask=mc)
        if HAS_O:
            do = dht * c_t * o * (1.0 - o) if HAS_DH else zero
            tl.store(pdx + 2 * H, do.to(dx.dtype.element_ty), mask=mc)
    if STORE_DC0:
        tl.store(dc0 + plane, w.to(dc0.dtype.element_ty), mask=cmask)


# --------------------------------------------------------------------------- configs

CHUNKS = (8, 16)
"""Time steps per scanned tile that the tuner tries (the forward's is also the backward's
checkpoint spacing). Not 32: a backward tile runs at least the forward's chunk, and at 32
steps the backward's 8-element tiles spilled on sm_90 (32 units on 4 warps in bf16, 64 on
8 in both: 8 B at 255 registers; ``altgrad-tune --check-configs``)."""


def _configs(least: int, most: int, steps_floor: int = 0, warps: tuple[int, ...] = (1, 2, 4),
             blocks: tuple[int, ...] = (32, 64, 128)) -> list[dict[str, int]]:  # fmt: skip
    """``blocks`` units by CHUNK steps on ``warps``, ``least`` to ``most`` elements of each
    tile per thread, counted at the steps a tile runs: max(CHUNK, ``steps_floor``)."""
    out = []
    for block in blocks:
        for chunk in CHUNKS:
            for w in warps:
                if least <= block * max(chunk, steps_floor) // (32 * w) <= most:
                    out.append({"BLOCK_H": block, "CHUNK": chunk, "num_warps": w})
    return [{**m, "num_stages": 1} for m in out]


def configs_fo_pool_fwd(target: arch.Where = None) -> list[dict[str, int]]:
    """Candidates for ``target`` (an architecture such as "sm_86" or a device; default the
    present GPU, see ``tuning.candidates``): 8 to 16 elements of each gate per thread.

    BLOCK_H 32-128 makes 250-1000 programs at the paper's B=20, H=1550 (two or more per
    SM); CHUNK sets how many bytes each has in flight. ``altgrad-tune --check-configs``
    compiles them for every supported architecture (with o, fp32 and bf16); those that
    spilled there are not offered there (``_FWD_SPILLED``).
    """
    return tuning.candidates("fo_pool_fwd", target)


def configs_fo_pool_bwd(target: arch.Where = None) -> list[dict[str, int]]:
    """Candidates for ``target``: 4 to 8 elements of each tile per thread at the steps the
    tile runs.

    The backward holds about twice the forward's tiles (dh, the recomputed c, two
    four-part scans). A backward chunk shorter than the forward's runs at the forward's
    (STEPS = max(CHUNK, CKPT_EVERY)), and the forward's chunk is tuned apart (a stored
    backward winner meets any forward candidate), so elements are counted at the longest
    chunk: at 16 or more per thread the backward spilled on sm_90 (8 B to 17.7 KB).
    Not 128 units: on 8 warps it spilled 8 B in fp32 at 8 steps. Those that spilled on an
    architecture are not offered there (``_BWD_SPILLED``; ``altgrad-tune
    --check-configs``)."""
    return tuning.candidates("fo_pool_bwd", target)


def _heuristic(steps: int, hidden: int) -> dict[str, int]:
    """The single config used under the interpreter (and by the GPU kernel tests).

    The interpreter scans a tile element by element, padding included, so: the chunk of
    4, 8 or 16 steps that pads T least, the longest of those (fewest loop trips); 64 or
    fewer units."""
    padded = tuning.round_up(steps, 4)
    chunk = max(c for c in (4, 8, 16) if tuning.round_up(steps, c) == padded)
    return {
        "BLOCK_H": min(64, max(4, triton.next_power_of_2(hidden))),
        "CHUNK": chunk,
        "num_warps": 4,
    }


_FWD_SPILLED: arch.Measured = {
    "sm_80": {"3.6": {(64, 8, 1), (64, 16, 2), (64, 16, 4), (128, 8, 2)},
              "3.9": {(32, 16, 1), (64, 16, 2), (64, 16, 4), (128, 16, 4)}},
    "sm_86": {"3.6": {(32, 8, 1), (32, 16, 1), (64, 8, 1), (64, 16, 2), (64, 16, 4), (128, 16, 4)},
              "3.9": {(32, 16, 1), (64, 16, 2), (128, 16, 4)}},
    "sm_89": {"3.6": {(32, 16, 1), (64, 16, 2), (64, 16, 4), (128, 16, 4)},
              "3.9": {(64, 16, 2), (128, 16, 4)}},
    "sm_90": {"3.6": {(64, 16, 4), (128, 8, 4)},
              "3.9": {(32, 16, 2), (64, 16, 2), (64, 16, 4), (128, 8, 4)}},
}  # fmt: skip
"""(BLOCK_H, CHUNK, num_warps) of forward candidates that spilled 8-40 B per thread there
at some shipped recipe's shape (``altgrad-tune --check-configs``; ptxas often stops at 128
registers and spills a few bytes rather than take more): not offered on that architecture
with that Triton."""

_BWD_SPILLED: arch.Measured = {
    "sm_80": {"3.6": {(64, 8, 8), (64, 16, 8)}, "3.9": {(32, 8, 4), (32, 16, 4)}},
    "sm_86": {"3.6": {(64, 8, 8), (64, 16, 8)}},
    "sm_89": {"3.6": {(64, 8, 8), (64, 16, 8)}},
    "sm_90": {"3.6": {(64, 8, 4), (64, 8, 8), (64, 16, 4), (64, 16, 8)},
              "3.9": {(32, 8, 4), (32, 16, 4)}},
}  # fmt: skip
"""The same for the backward (8-12 B per thread, whatever the forward's chunk)."""


def _fitting(configs: list[dict[str, int]], table: arch.Measured,
             limits: arch.Limits) -> list[dict[str, int]]:  # fmt: skip
    spilled = arch.measured_failures(table, limits)
    return [m for m in configs if (m["BLOCK_H"], m["CHUNK"], m["num_warps"]) not in spilled]


def _fwd_configs(limits: arch.Limits) -> list[dict[str, int]]:
    """The forward's candidates on ``limits``: 8 to 16 elements per thread on 1-8 warps
    (8 warps: 128 units by 16 steps, the one 16-step tile that spilled on no supported GPU),
    less what spilled on its architecture (``_FWD_SPILLED``). At most a few KB of shared
    memory (the scans' exchange between warps), which every supported GPU has."""
    return _fitting(_configs(8, 16, warps=(1, 2, 4, 8)), _FWD_SPILLED, limits)


def _bwd_configs(limits: arch.Limits) -> list[dict[str, int]]:
    """The backward's candidates on ``limits``, less what spilled there (``_BWD_SPILLED``)."""
    configs = _configs(4, 8, steps_floor=max(CHUNKS), warps=(1, 2, 4, 8), blocks=(32, 64))
    return _fitting(configs, _BWD_SPILLED, limits)


tuning.register("fo_pool_fwd", _fwd_configs)
tuning.register("fo_pool_bwd", _bwd_configs)

_AUTOTUNE_KEY = ["B", "H", "HAS_O"]
_fo_pool_fwd_tuned = tuning.DeviceAutotune("fo_pool_fwd", _fo_pool_fwd_kernel, key=_AUTOTUNE_KEY)
_fo_pool_bwd_tuned = tuning.DeviceAutotune(
    "fo_pool_bwd", _fo_pool_bwd_kernel, key=[*_AUTOTUNE_KEY, "CKPT_EVERY"]
)


# --------------------------------------------------------------------------- launchers


def _check(gates: torch.Tensor, c0: torch.Tensor | None, output_gate: bool) -> tuple[int, int, int]:
    """Validate the inputs; return (T, B, H)."""
    check_tensor("fo_pool", "gates", gates)
    g = 3 if output_gate else 2
    if gates.dim() != 3:
        raise ValueError(f"fo_pool: gates must be [T, B, {g}H], got shape {tuple(gates.shape)}")
    T, B, width = gates.shape
    if T < 1 or B < 1 or width < 1:
        raise ValueError(f"fo_pool: gates must be non-empty, got shape {tuple(gates.shape)}")
    if width % g:
        raise ValueError(
            f"fo_pool: gates' last dimension must be {g} x hidden size "
            f"(output_gate={output_gate}), got {width}"
        )
    H = width // g
    # the cell state may be carried in fp32 whatever the storage dtype
    check_tensor(
        "fo_pool", "c0", c0, shape=(B, H), optional=True, fp32_ok=True,
        dtype=gates.dtype, device=gates.device, ref="gates",
    )  # fmt: skip
    return T, B, H


def _state_dtype(gates: torch.Tensor, c0: torch.Tensor | None) -> torch.dtype:
    """c_T's dtype: c0's (an fp32 c0 keeps the carried state in fp32), else the gates'."""
    return gates.dtype if c0 is None else c0.dtype


def _grid(batch: int, hidden: int):
    return lambda m: (batch * triton.cdiv(hidden, m["BLOCK_H"]),)


def fo_pool_forward(
    gates: torch.Tensor,
    c0: torch.Tensor | None,
    *,
    output_gate: bool = True,
    save: bool = False,
    meta: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """Launch the forward scan on raw pre-activations ``gates`` [T, B, 3H] (or [T, B, 2H]).

    Returns (h, c_T, checkpoints, chunk): with ``save``, the fp32 c entering every chunk of
    ``chunk`` steps (rows past cdiv(T, chunk) unused), which :func:`fo_pool_backward`
    needs; else None. ``meta`` forces a config (else override registry, heuristic,
    autotune)."""
    T, B, H = _check(gates, c0, output_gate)
    c0 = None if c0 is None else c0.contiguous()
    h = torch.empty((T, B, H), dtype=gates.dtype, device=gates.device)
    c_last = torch.empty((B, H), dtype=_state_dtype(gates, c0), device=gates.device)
    key = tuning.make_key(gates.dtype, B * H)
    if meta is None:
        meta = tuning.pick("fo_pool_fwd", key, lambda: _heuristic(T, H))
    ckpt = None
    if save:  # under autotune, room for the smallest candidate chunk's checkpoints
        rows = triton.cdiv(T, min(CHUNKS) if meta is None else meta["CHUNK"])
        ckpt = torch.empty((rows, B, H), dtype=torch.float32, device=gates.device)
    args = (gates, c0, h, ckpt, c_last, T, B, H, *gates.stride())
    tuned = _fo_pool_fwd_tuned(gates.device)
    launch(
        "fo_pool_fwd", _fo_pool_fwd_kernel, tuned,
        key=key, heuristic=lambda: _heuristic(T, H),
        grid=_grid(B, H), args=args, meta=meta, HAS_O=output_gate,
    )  # fmt: skip
    chunk = (meta or tuned.best_config.kwargs)["CHUNK"]
    return h, c_last, ckpt, chunk


def fo_pool_backward(
    gates: torch.Tensor,
    ckpt: torch.Tensor,
    chunk: int,
    dh: torch.Tensor | None,
    dc_last: torch.Tensor | None,
    *,
    output_gate: bool = True,
    dc0_dtype: torch.dtype | None = None,
    meta: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the reverse scan. ``ckpt``/``chunk``: what :func:`fo_pool_forward` saved;
    ``dh``/``dc_last`` None mean zeros (nothing allocated); ``dc0_dtype`` None: no dc0.

    Returns (d gates [T, B, G*H] contiguous in the gates' dtype, dc0 or None)."""
    T, B, H = _check(gates, None, output_gate)
    need = triton.cdiv(T, chunk)
    if (
        ckpt.dtype != torch.float32
        or ckpt.dim() != 3
        or ckpt.shape[0] < need
        or tuple(ckpt.shape[1:]) != (B, H)
        or not ckpt.is_contiguous()
    ):
        raise ValueError(
            f"fo_pool: checkpoints must be contiguous fp32 [>= {need}, {B}, {H}], got "
            f"{ckpt.dtype} {tuple(ckpt.shape)}"
        )
    for name, g, shape in (("dh", dh, (T, B, H)), ("dc_last", dc_last, (B, H))):
        if g is not None and tuple(g.shape) != shape:
            raise ValueError(f"fo_pool: {name} must have shape {shape}, got {tuple(g.shape)}")
    dh = None if dh is None else dh.contiguous()
    dc_last = None if dc_last is None else dc_last.contiguous()
    dx = torch.empty(gates.shape, dtype=gates.dtype, device=gates.device)
    dc0 = None if dc0_dtype is None else torch.empty((B, H), dtype=dc0_dtype, device=gates.device)
    args = (gates, ckpt, dh, dc_last, dx, dc0, T, B, H, *gates.stride())
    launch(
        "fo_pool_bwd", _fo_pool_bwd_kernel, _fo_pool_bwd_tuned(gates.device),
        key=tuning.make_key(gates.dtype, B * H), heuristic=lambda: _heuristic(T, H),
        grid=_grid(B, H), args=args, meta=meta, HAS_O=output_gate, CKPT_EVERY=chunk,
    )  # fmt: skip
    return dx, dc0


# --------------------------------------------------------------------------- autograd


class FoPoolFunction(torch.autograd.Function):
    """Fused-gate fo-pooling: Triton forward scan and reverse-scan backward."""

    @staticmethod
    def forward(ctx, gates, c0, output_gate):
        h, c_last, ckpt, chunk = fo_pool_forward(gates, c0, output_gate=output_gate, save=True)
        ctx.save_for_backward(gates, ckpt)
        ctx.chunk, ctx.output_gate = chunk, output_gate
        ctx.c0_dtype = None if c0 is None else c0.dtype
        # unused outputs arrive as None: the kernel reads them as zeros, nothing allocated
        ctx.set_materialize_grads(False)
        return h, c_last

    @staticmethod
    def backward(ctx, dh, dc_last):
        gates, ckpt = ctx.saved_tensors
        want_dc0 = ctx.c0_dtype is not None and ctx.needs_input_grad[1]
        dgates, dc0 = fo_pool_backward(
            gates, ckpt, ctx.chunk, dh, dc_last, output_gate=ctx.output_gate,
            dc0_dtype=ctx.c0_dtype if want_dc0 else None,
        )  # fmt: skip
        return dgates, dc0, None


# --------------------------------------------------------------------------- reference


def fo_pool_reference(
    gates: torch.Tensor, c0: torch.Tensor | None = None, *, output_gate: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch fo-pooling from the raw projection, step by step over time.

    ``gates`` [T, B, 3H] holds the pre-activations Z | F | O ([T, B, 2H], Z | F, without an
    output gate); c0 [B, H] or None (zeros). The activations and the scan run in fp32.
    Returns (h [T, B, H] in the gates' dtype, c_T [B, H] in c0's, the gates' without c0).
    """
    blocks = gates.float().chunk(3 if output_gate else 2, dim=-1)
    z, f = torch.tanh(blocks[0]), torch.sigmoid(blocks[1])
    c = torch.zeros_like(z[0]) if c0 is None else c0.float()
    cs = []
    for t in range(gates.shape[0]):
        c = f[t] * c + (1.0 - f[t]) * z[t]
        cs.append(c)
    h = torch.stack(cs)
    if output_gate:
        h = torch.sigmoid(blocks[2]) * h
    return h.to(gates.dtype), c.to(_state_dtype(gates, c0))


# --------------------------------------------------------------------------- public


def fo_pool(
    gates: torch.Tensor,
    c0: torch.Tensor | None = None,
    *,
    output_gate: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """QRNN fo-pooling from the layer's projection, differentiable in ``gates`` and ``c0``.

    Args:
        gates: [T, B, 3H] pre-activations, column blocks Z | F | O (tanh, sigmoid, sigmoid
            are applied here); [T, B, 2H], Z | F, when ``output_gate`` is False. fp32,
            fp16 or bf16; any strides (read in place).
        c0: [B, H] initial state, or None for zeros; the gates' dtype, or fp32 to carry the
            state in fp32 between segments under fp16/bf16 storage.
        output_gate: whether ``gates`` holds an O block (h = o c) or not (h = c).
        backend: "auto" (Triton on CUDA tensors, else the reference), "torch", "triton".

    Returns:
        (h [T, B, H], c_T [B, H]): h in the gates' dtype, c_T in c0's (the gates' without
        c0); activations and scan in fp32. The gradient of ``gates`` comes back as one
        [T, B, 3H] tensor.

    Raises:
        ValueError: on the Triton path, for a wrong shape, dtype or device (naming it).
    """
    if use_triton(backend, gates, c0):
        wants_grad = gates.requires_grad or (c0 is not None and c0.requires_grad)
        if torch.is_grad_enabled() and wants_grad:
            return FoPoolFunction.apply(gates, c0, output_gate)
        h, c_last, _, _ = fo_pool_forward(gates, c0, output_gate=output_gate)
        return h, c_last
    return fo_pool_reference(gates, c0, output_gate=output_gate)
