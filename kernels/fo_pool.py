"""QRNN fo-pooling: c_t = f_t * c_{t-1} + (1 - f_t) * z_t,  h_t = o_t * c_t.

The recurrence has no matrix product: every (batch, hidden) column is an independent
first-order scan over time. The kernels therefore run one program per BLOCK columns of
the flattened B*H plane and loop over T inside the program, carrying c (and in the
backward, dc) in fp32 registers, whatever the storage dtype (fp32, fp16 or bf16).

What the forward saves for the backward: the fp32 sequence c_1..c_T ([T, B, H] fp32).
The backward needs c_{t-1} for df_t = dc_t (c_{t-1} - z_t) and c_t for do_t = dh_t c_t;
recomputing c_{t-1} = (c_t - (1 - f_t) z_t) / f_t from c_T is unstable when f_t is small,
and a half-precision copy would put 2^-8 relative noise into df exactly where c_{t-1} and
z_t nearly cancel. fp32 costs T*B*H*4 bytes (24.8 MB per 1550-wide layer at B=20, T=200),
small next to the activations autograd keeps anyway. When ``o`` is None and the dtype is
fp32, h *is* that sequence and is saved instead: nothing extra is written. Without a
gradient to compute (inference, or no input requiring grad) nothing is saved.

Bytes moved per (t, b, h) element, s = storage bytes (4 fp32, 2 fp16/bf16):

=================  ==========================================  =========  =========
direction          traffic                                     fp32       bf16
=================  ==========================================  =========  =========
forward, with o    read f, z, o (3s); write h (s), c fp32 (4)  20 B       12 B
forward, no o      read f, z (2s); write h (s) [+ c fp32 (4)]  12 B       10 B
backward, with o   read dh, f, z, o (4s), c (4); write df,     32 B       18 B
                   dz, do (3s)
backward, no o     read dh, f, z (3s), c (4); write df, dz     24 B       14 B
=================  ==========================================  =========  =========

(each c_t is read once in the backward: c_t of step t is c_{t-1} of step t+1, kept in
registers). At the paper's shape (T=200, B=20, H=1550: 6.2M elements) the bf16 forward
moves 74 MB, about 22 us at an H100's 3.35 TB/s. The bound is bandwidth, but only 31,000
independent columns exist, so the loads of one step are few; each program therefore
issues the loads of step t+1 before the arithmetic of step t (one step of software
prefetch) to keep two steps of memory traffic in flight.

Measured on an H200 (Triton 3.6, autotuned, forward saving c, with o and c0): at H=1550,
bf16 forward 100 us (746 GB/s), backward 115 us (969 GB/s); fp32 112 us and 137 us
(1.1 and 1.4 TB/s); at H=400, bf16 95 us and 103 us. So the kernels are latency bound,
about 0.5 us per time step whatever the width: well short of the bandwidth bound at
H=400, 3-6x short of it at H=1550 (4.3 TB/s), and 60-140x faster than the Python-loop
reference.

Inputs f, z, o may be strided views (e.g. ``chunk`` of a [T, B, 3H] projection): the
kernels take their strides, so no copy is made; outputs are contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import tuning
from ._common import check_tensor, launch, strides
from ._dispatch import use_triton

# --------------------------------------------------------------------------- kernels


@triton.heuristics(
    {
        "HAS_O": lambda a: a["o"] is not None,
        "HAS_C0": lambda a: a["c0"] is not None,
        "STORE_C": lambda a: a["cseq"] is not None,
    }
)
@triton.jit(do_not_specialize=["T"])
def _fo_pool_fwd_kernel(
    f,  # [T, B, H] forget gate, strides (sft, sfb, sfh)
    z,  # [T, B, H] candidate, strides (szt, szb, szh)
    o,  # [T, B, H] output gate, strides (sot, sob, soh), or None
    c0,  # [B, H] contiguous initial state, or None (zeros)
    h,  # [T, B, H] contiguous output, input dtype
    cseq,  # [T, B, H] contiguous fp32 copy of c_1..c_T for the backward, or None
    c_last,  # [B, H] contiguous final state, input dtype
    T,  # sequence length (runtime: not a specialisation key)
    H,  # hidden size, to split a flat column index into (b, h)
    BH,  # B * H columns
    sft,
    sfb,
    sfh,
    szt,
    szb,
    szh,
    sot,
    sob,
    soh,
    CONTIG: tl.constexpr,  # f, z (and o) contiguous: use the flat index, skip (b, h) split
    HAS_O: tl.constexpr,
    HAS_C0: tl.constexpr,
    STORE_C: tl.constexpr,
    BLOCK: tl.constexpr,  # columns per program
):
    col = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = col < BH
    if CONTIG:
        sft = BH
        szt = BH
        sot = BH
        pf = f + col
        pz = z + col
        if HAS_O:
            po = o + col
    else:
        bi = col // H
        hi = col % H
        pf = f + bi * sfb + hi * sfh
        pz = z + bi * szb + hi * szh
        if HAS_O:
            po = o + bi * sob + hi * soh
    if HAS_C0:
        c = tl.load(c0 + col, mask=mask, other=0.0).to(tl.float32)
    else:
        c = tl.zeros([BLOCK], dtype=tl.float32)
    ph = h + col
    if STORE_C:
        pc = cseq + col
    # prefetch step 0
    f_nx = tl.load(pf, mask=mask, other=0.0)
    z_nx = tl.load(pz, mask=mask, other=0.0)
    if HAS_O:
        o_nx = tl.load(po, mask=mask, other=0.0)
    for t in range(T):
        ft = f_nx.to(tl.float32)
        zt = z_nx.to(tl.float32)
        if HAS_O:
            ot = o_nx.to(tl.float32)
        # issue step t+1's loads before step t's arithmetic (nothing loaded past T-1)
        nxt = col < tl.where(t + 1 < T, BH, 0)
        pf += sft
        pz += szt
        f_nx = tl.load(pf, mask=nxt, other=0.0)
        z_nx = tl.load(pz, mask=nxt, other=0.0)
        if HAS_O:
            po += sot
            o_nx = tl.load(po, mask=nxt, other=0.0)
        c = ft * c + (1.0 - ft) * zt
        if HAS_O:
            tl.store(ph, (ot * c).to(h.dtype.element_ty), mask=mask)
        else:
            tl.store(ph, c.to(h.dtype.element_ty), mask=mask)
        ph += BH
        if STORE_C:
            tl.store(pc, c, mask=mask)
            pc += BH
    tl.store(c_last + col, c.to(c_last.dtype.element_ty), mask=mask)


@triton.heuristics(
    {
        "HAS_O": lambda a: a["o"] is not None,
        "HAS_C0": lambda a: a["c0"] is not None,
        "HAS_DH": lambda a: a["dh"] is not None,
        "HAS_DC": lambda a: a["dc_last"] is not None,
        "STORE_DC0": lambda a: a["dc0"] is not None,
    }
)
@triton.jit(do_not_specialize=["T"])
def _fo_pool_bwd_kernel(
    f,  # [T, B, H] forget gate, strides (sft, sfb, sfh)
    z,  # [T, B, H] candidate, strides (szt, szb, szh)
    o,  # [T, B, H] output gate, strides (sot, sob, soh), or None
    cseq,  # [T, B, H] contiguous fp32 c_1..c_T saved by the forward
    c0,  # [B, H] contiguous initial state, or None (zeros)
    dh,  # [T, B, H] contiguous upstream gradient of h, or None (zeros)
    dc_last,  # [B, H] contiguous upstream gradient of c_T, or None (zeros)
    df,  # [T, B, H] contiguous output, input dtype
    dz,  # [T, B, H] contiguous output, input dtype
    do,  # [T, B, H] contiguous output (written when HAS_O)
    dc0,  # [B, H] contiguous output, or None (not wanted)
    T,  # sequence length (runtime: not a specialisation key)
    H,
    BH,
    sft,
    sfb,
    sfh,
    szt,
    szb,
    szh,
    sot,
    sob,
    soh,
    CONTIG: tl.constexpr,
    HAS_O: tl.constexpr,
    HAS_C0: tl.constexpr,
    HAS_DH: tl.constexpr,
    HAS_DC: tl.constexpr,
    STORE_DC0: tl.constexpr,
    BLOCK: tl.constexpr,
):
    col = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = col < BH
    last = (T - 1).to(tl.int64)  # 64-bit: (T-1) * stride may pass 2^31
    if CONTIG:
        sft = BH
        szt = BH
        sot = BH
        pf = f + col + last * BH
        pz = z + col + last * BH
        if HAS_O:
            po = o + col + last * BH
    else:
        bi = col // H
        hi = col % H
        pf = f + bi * sfb + hi * sfh + last * sft
        pz = z + bi * szb + hi * szh + last * szt
        if HAS_O:
            po = o + bi * sob + hi * soh + last * sot
    flat = col + last * BH  # offset of step T-1 in the contiguous tensors
    pc = cseq + flat
    pdf = df + flat
    pdz = dz + flat
    if HAS_DH:
        pdh = dh + flat
    if HAS_O:
        pdo = do + flat
    if HAS_C0:
        c_init = tl.load(c0 + col, mask=mask, other=0.0).to(tl.float32)
    else:
        c_init = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_DC:
        dc = tl.load(dc_last + col, mask=mask, other=0.0).to(tl.float32)
    else:
        dc = tl.zeros([BLOCK], dtype=tl.float32)
    c_t = tl.load(pc, mask=mask, other=0.0)
    # prefetch step T-1's inputs and c_{T-2}
    pc -= BH
    c_nx = tl.load(pc, mask=col < tl.where(T > 1, BH, 0), other=0.0)
    f_nx = tl.load(pf, mask=mask, other=0.0)
    z_nx = tl.load(pz, mask=mask, other=0.0)
    if HAS_O:
        o_nx = tl.load(po, mask=mask, other=0.0)
    if HAS_DH:
        dh_nx = tl.load(pdh, mask=mask, other=0.0)
    for i in range(T):
        t = T - 1 - i
        ft = f_nx.to(tl.float32)
        zt = z_nx.to(tl.float32)
        c_prev = tl.where(t > 0, c_nx, c_init)
        if HAS_O:
            ot = o_nx.to(tl.float32)
        if HAS_DH:
            dht = dh_nx.to(tl.float32)
        # issue step t-1's loads (and c_{t-2}) before step t's arithmetic
        nxt = col < tl.where(t > 0, BH, 0)
        pf -= sft
        pz -= szt
        pc -= BH
        f_nx = tl.load(pf, mask=nxt, other=0.0)
        z_nx = tl.load(pz, mask=nxt, other=0.0)
        c_nx = tl.load(pc, mask=col < tl.where(t > 1, BH, 0), other=0.0)
        if HAS_O:
            po -= sot
            o_nx = tl.load(po, mask=nxt, other=0.0)
        if HAS_DH:
            pdh -= BH
            dh_nx = tl.load(pdh, mask=nxt, other=0.0)
            if HAS_O:
                dc += dht * ot
                tl.store(pdo, (dht * c_t).to(do.dtype.element_ty), mask=mask)
            else:
                dc += dht
        elif HAS_O:
            tl.store(pdo, tl.zeros([BLOCK], dtype=tl.float32).to(do.dtype.element_ty), mask=mask)
        tl.store(pdf, (dc * (c_prev - zt)).to(df.dtype.element_ty), mask=mask)
        tl.store(pdz, (dc * (1.0 - ft)).to(dz.dtype.element_ty), mask=mask)
        dc = dc * ft
        c_t = c_prev
        pdf -= BH
        pdz -= BH
        if HAS_O:
            pdo -= BH
    if STORE_DC0:
        tl.store(dc0 + col, dc.to(dc0.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- configs


def configs_fo_pool_fwd() -> list[dict[str, int]]:
    """Candidates: BLOCK columns per program, 1 to 4 columns per thread.

    Only B*H columns exist (31,000 at the paper's shape), so small blocks spread them over
    all SMs while large ones with few warps give each thread several independent loads.
    On an H200 (Triton 3.6) the autotuner picked 64-column programs for the forward.
    """
    out = []
    for block in (32, 64, 128, 256, 512, 1024):
        for warps in (1, 2, 4, 8):
            if 1 <= block // (32 * warps) <= 4:
                out.append({"BLOCK": block, "num_warps": warps, "num_stages": 1})
    return out


def configs_fo_pool_bwd() -> list[dict[str, int]]:
    """Same space as the forward: the backward is the same scan run in reverse."""
    return configs_fo_pool_fwd()


def _heuristic(bh: int) -> dict[str, int]:
    """The single config used under the interpreter: few, wide programs."""
    return {"BLOCK": min(512, max(16, triton.next_power_of_2(bh))), "num_warps": 4}


tuning.register("fo_pool_fwd", configs_fo_pool_fwd)
tuning.register("fo_pool_bwd", configs_fo_pool_bwd)

_fo_pool_fwd_tuned = triton.autotune(
    configs=tuning.to_triton(configs_fo_pool_fwd()), key=["BH", "CONTIG"]
)(_fo_pool_fwd_kernel)
_fo_pool_bwd_tuned = triton.autotune(
    configs=tuning.to_triton(configs_fo_pool_bwd()), key=["BH", "CONTIG"]
)(_fo_pool_bwd_kernel)


# --------------------------------------------------------------------------- launchers


def _check(f: torch.Tensor, z: torch.Tensor, o: torch.Tensor | None, c0: torch.Tensor | None):
    check_tensor("fo_pool", "f", f)
    if f.dim() != 3:
        raise ValueError(f"fo_pool: f must be [T, B, H], got shape {tuple(f.shape)}")
    T, B, H = f.shape
    if T < 1 or B * H < 1:
        raise ValueError(f"fo_pool: f must be non-empty, got shape {tuple(f.shape)}")
    same = {"dtype": f.dtype, "device": f.device, "ref": "f"}
    check_tensor("fo_pool", "z", z, shape=f.shape, **same)
    check_tensor("fo_pool", "o", o, shape=f.shape, optional=True, **same)
    # the cell state may be carried in fp32 whatever the storage dtype
    check_tensor("fo_pool", "c0", c0, shape=(B, H), optional=True, fp32_ok=True, **same)


def _state_dtype(f: torch.Tensor, c0: torch.Tensor | None) -> torch.dtype:
    """c_T's dtype: c0's (an fp32 c0 keeps the carried state in fp32), else f's."""
    return f.dtype if c0 is None else c0.dtype


def _launch(kernel_name: str, plain, tuned, bh: int, dtype: torch.dtype, args, meta):
    """Launch with ``meta`` if given, else a forced/heuristic config, else autotune."""
    launch(
        kernel_name, plain, tuned,
        key=tuning.make_key(dtype, bh), heuristic=lambda: _heuristic(bh),
        grid=lambda m: (triton.cdiv(bh, m["BLOCK"]),), args=args, meta=meta,
    )  # fmt: skip


def fo_pool_forward(
    f: torch.Tensor,
    z: torch.Tensor,
    o: torch.Tensor | None,
    c0: torch.Tensor | None,
    *,
    save_c: bool,
    meta: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the forward scan. Returns (h, c_T, cseq); cseq is the fp32 c sequence the
    backward reads (``h`` itself when o is None and the dtype is fp32), or None unless
    ``save_c``. ``meta`` forces a config (else override registry, heuristic, autotune)."""
    _check(f, z, o, c0)
    T, B, H = f.shape
    bh = B * H
    c0 = None if c0 is None else c0.contiguous()
    contig = all(t is None or t.is_contiguous() for t in (f, z, o))
    h = torch.empty((T, B, H), dtype=f.dtype, device=f.device)
    c_last = torch.empty((B, H), dtype=_state_dtype(f, c0), device=f.device)
    h_is_c = o is None and f.dtype == torch.float32
    cseq = None
    if save_c and not h_is_c:
        cseq = torch.empty((T, B, H), dtype=torch.float32, device=f.device)
    args = (f, z, o, c0, h, cseq, c_last, T, H, bh)
    args += strides(f) + strides(z) + strides(o) + (contig,)
    _launch("fo_pool_fwd", _fo_pool_fwd_kernel, _fo_pool_fwd_tuned, bh, f.dtype, args, meta)
    if save_c and h_is_c:
        cseq = h
    return h, c_last, cseq


def fo_pool_backward(
    f: torch.Tensor,
    z: torch.Tensor,
    o: torch.Tensor | None,
    c0: torch.Tensor | None,
    cseq: torch.Tensor,
    dh: torch.Tensor | None,
    dc_last: torch.Tensor | None,
    *,
    want_dc0: bool = True,
    meta: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Launch the reverse scan. ``dh``/``dc_last`` None mean zeros (nothing allocated).

    Returns (df, dz, do or None, dc0 or None)."""
    _check(f, z, o, c0)
    T, B, H = f.shape
    bh = B * H
    if cseq.shape != f.shape or cseq.dtype != torch.float32 or not cseq.is_contiguous():
        raise ValueError(
            f"fo_pool: cseq must be contiguous fp32 of shape {tuple(f.shape)}, got "
            f"{cseq.dtype} {tuple(cseq.shape)}"
        )
    for name, g, shape in (("dh", dh, f.shape), ("dc_last", dc_last, (B, H))):
        if g is not None and tuple(g.shape) != tuple(shape):
            raise ValueError(f"fo_pool: {name} must have shape {tuple(shape)}, got {g.shape}")
    dh = None if dh is None else dh.contiguous()
    dc_last = None if dc_last is None else dc_last.contiguous()
    c0 = None if c0 is None else c0.contiguous()
    contig = all(t is None or t.is_contiguous() for t in (f, z, o))
    df = torch.empty((T, B, H), dtype=f.dtype, device=f.device)
    dz = torch.empty_like(df)
    do = None if o is None else torch.empty_like(df)
    dc0 = None
    if c0 is not None and want_dc0:
        dc0 = torch.empty((B, H), dtype=c0.dtype, device=f.device)
    args = (f, z, o, cseq, c0, dh, dc_last, df, dz, do, dc0, T, H, bh)
    args += strides(f) + strides(z) + strides(o) + (contig,)
    _launch("fo_pool_bwd", _fo_pool_bwd_kernel, _fo_pool_bwd_tuned, bh, f.dtype, args, meta)
    return df, dz, do, dc0


# --------------------------------------------------------------------------- autograd


class FoPoolFunction(torch.autograd.Function):
    """fo-pooling with Triton forward and reverse-scan backward."""

    @staticmethod
    def forward(ctx, f, z, o, c0):
        h, c_last, cseq = fo_pool_forward(f, z, o, c0, save_c=True)
        ctx.save_for_backward(f, z, o, c0, cseq)
        # unused outputs arrive as None: the kernel reads them as zeros, nothing allocated
        ctx.set_materialize_grads(False)
        return h, c_last

    @staticmethod
    def backward(ctx, dh, dc_last):
        f, z, o, c0, cseq = ctx.saved_tensors
        want_dc0 = c0 is not None and ctx.needs_input_grad[3]
        df, dz, do, dc0 = fo_pool_backward(f, z, o, c0, cseq, dh, dc_last, want_dc0=want_dc0)
        return df, dz, do, dc0


# --------------------------------------------------------------------------- reference


def fo_pool_reference(
    f: torch.Tensor, z: torch.Tensor, o: torch.Tensor | None, c0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch fo-pooling over time. f, z, o: [T, B, H]; c0: [B, H] or None (zeros).

    Returns (h [T, B, H], c_T [B, H]); h = c when ``o`` is None. Computes in fp32 and
    returns h in f's dtype, c_T in c0's (f's without c0).
    """
    c = torch.zeros_like(f[0], dtype=torch.float32) if c0 is None else c0.float()
    cs = []
    for t in range(f.shape[0]):
        ft = f[t].float()
        c = ft * c + (1.0 - ft) * z[t].float()
        cs.append(c)
    cseq = torch.stack(cs)
    h = cseq if o is None else o.float() * cseq
    return h.to(f.dtype), c.to(_state_dtype(f, c0))


# --------------------------------------------------------------------------- public


def fo_pool(
    f: torch.Tensor,
    z: torch.Tensor,
    o: torch.Tensor | None = None,
    c0: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """QRNN fo-pooling, differentiable in f, z, o and c0.

    Args:
        f: [T, B, H] forget gate (after the sigmoid); fp32, fp16 or bf16; any strides.
        z: [T, B, H] candidate (after the tanh); f's dtype.
        o: [T, B, H] output gate, or None for h = c.
        c0: [B, H] initial state, or None for zeros; f's dtype, or fp32 to carry the state
            in fp32 between segments under fp16/bf16 storage.
        backend: "auto" (Triton on CUDA tensors, else the reference), "torch", "triton".

    Returns:
        (h [T, B, H], c_T [B, H]): h in f's dtype, c_T in c0's (f's without c0); the
        scan accumulates in fp32.

    Raises:
        ValueError: on the Triton path, for a wrong shape, dtype or device (naming it).
    """
    if use_triton(backend, f, z, o, c0):
        inputs = (f, z, o, c0)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            return FoPoolFunction.apply(f, z, o, c0)
        h, c_last, _ = fo_pool_forward(f, z, o, c0, save_c=False)
        return h, c_last
    return fo_pool_reference(f, z, o, c0)
