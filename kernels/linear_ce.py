"""The LM head fused with its loss: mean cross-entropy of ``hidden @ weight.T + bias``
against the targets, and every gradient, without the [N, V] logits of the whole segment.

    loss = mean_n ( lse_n - z_{n, t_n} ),   z = h W^T + b,   lse_n = log sum_v exp z_{n, v}
    dz = (softmax(z) - onehot(t)) / N,   dh = dz W,   dW = dz^T h,   db = sum_n dz

Design (chunked over rows, the gradients computed in the forward): the N rows are taken
CHUNK at a time; for each chunk one GEMM writes its logits [CHUNK, V] (bias added by the
GEMM, storage dtype, fp32 accumulation inside the GEMM), then one Triton launch with a
program per row walks the row's vocabulary blocks twice: an online log-sum-exp (running
max and sum per lane, fp32), the row's loss lse - z_t, and, when a gradient is wanted,
(softmax - onehot) / N written over the logits in place. Two more GEMMs turn that chunk
into its rows of dh and its addition to dW (an fp32 accumulator), and a column sum into
db. The loss is the fp32 sum of the per-row losses over N (deterministic: a fixed order).
The backward only multiplies the saved dh, dW, db by the upstream scalar. Nothing of
size N x V exists at once: the largest temporary is one chunk of logits, and autograd
keeps dh [N, D], dW [V, D] fp32 and db [V] fp32 (what the backward must return anyway)
instead of the logits and their fp32 log-softmax. The GEMMs are cuBLAS's (bf16 tensor
cores on a GPU); the Triton kernel does what eager PyTorch spreads over an upcast, a
log-softmax, a gather and their backward kernels.

Targets must lie in [0, V): the public function checks them (a ValueError naming the
first bad one; one small reduction and one host sync per call) and the kernel writes NaN
for the loss of any row whose target is out of range, so nothing is ever ignored silently.

FLOPs and bytes for N rows, V words, D features, s = storage bytes, C chunks:

* FLOPs: 2 N V D for the logits, 2 N V D for dh, 2 N V D for dW (6 N V D, as eager's
  forward + backward) plus about 5 N V for the softmax passes. At N = 4,000 (bptt 200 x
  batch 20), V = 33,278, D = 400: 319 GFLOP.
* Bytes: per chunk the logits are written by the GEMM (s), read twice and rewritten by
  the kernel (3s) and read by the dh and dW GEMMs (2s): 6 s N V in all, 1.6 GB in bf16 at
  that shape, besides W read 3 C times and dW read and written C times in fp32. Eager
  PyTorch under bf16 autocast writes bf16 logits, their fp32 copy, the fp32 log-softmax,
  its fp32 gradient and a bf16 copy of it (about 22 N V bytes, 2.9 GB): the fused head
  moves about half the bytes and keeps about a tenth of them live. Not timed on a GPU
  yet: ``altgrad-bench --families linear_ce``.

The PyTorch reference (:func:`linear_cross_entropy_reference`) is the CPU path and the
test oracle. When the rows fit one chunk it is exactly ``F.cross_entropy(F.linear(h, W,
b).float(), t)`` through autograd (what the model computed before the head was fused, so
small CPU runs train bit for bit as before); above that it runs the same chunk loop as
the kernel path with a PyTorch row step, so CPU training's peak memory falls too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import arch, tuning
from ._common import check_tensor, launch
from ._dispatch import interpreting, use_triton

# --------------------------------------------------------------------------- kernel


@triton.jit
def _ce_rows_kernel(
    logits,  # [R, V] one chunk's logits z (bias included), row stride s_row, unit column
    # stride; fp32/fp16/bf16; overwritten with (softmax - onehot) * scale when GRAD
    targets,  # [R] int64 target ids, expected in [0, V)
    loss,  # [R] fp32 output: lse - z[target] per row (NaN for a target out of range)
    V,  # vocabulary size (columns)
    s_row,  # row stride of logits, in elements
    scale,  # fp32 factor of the gradient: 1 / N of the whole mean
    GRAD: tl.constexpr,  # write the gradient over the logits
    BLOCK_V: tl.constexpr,  # columns per tile
):
    row = tl.program_id(0).to(tl.int64)
    base = logits + row * s_row
    cols = tl.arange(0, BLOCK_V)
    run_max = tl.full([BLOCK_V], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_V], dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        z = tl.load(base + v0 + cols, mask=v0 + cols < V, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(run_max, z)
        # a lane that has seen only padding keeps sum 0 (exp(-inf - -inf) would be NaN)
        safe = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - safe) + tl.exp(z - safe)
        run_max = new_max
    top = tl.max(run_max, axis=0)
    lse = top + tl.log(tl.sum(run_sum * tl.exp(run_max - top), axis=0))
    t = tl.load(targets + row)
    valid = (t >= 0) & (t < V)
    z_t = tl.load(base + t, mask=valid, other=float("nan")).to(tl.float32)
    tl.store(loss + row, lse - z_t)
    if GRAD:
        for v0 in range(0, V, BLOCK_V):
            m = v0 + cols < V
            z = tl.load(base + v0 + cols, mask=m, other=0.0).to(tl.float32)
            g = tl.exp(z - lse) * scale
            g = tl.where(v0 + cols == t, g - scale, g)
            tl.store(base + v0 + cols, g.to(logits.dtype.element_ty), mask=m)


# --------------------------------------------------------------------------- configs


def configs_linear_ce(target: arch.Where = None) -> list[dict[str, int]]:
    """Candidates for the row kernel on ``target`` (see ``tuning.candidates``): vocabulary
    tiles of 1-8K columns on 4-16 warps, 8 to 32 columns per thread (a row of 33K words is
    4-33 tiles per pass); 64 per thread spilled registers in fp32 (``altgrad-tune
    --check-configs``)."""
    return tuning.candidates("linear_ce", target)


_SPILLED: arch.Measured = {
    "sm_80": {"3.6": {(8192, 8)}},
    "sm_86": {"3.6": {(8192, 8)}, "3.9": {(8192, 8)}},
    "sm_89": {"3.6": {(8192, 8)}, "3.9": {(8192, 8)}},
}
"""(BLOCK_V, num_warps) that spilled 8 B per thread there (32 columns per thread, with the
gradient, at WikiText-2's 33,278 words; ``altgrad-tune --check-configs``)."""


def _configs(limits: arch.Limits) -> list[dict[str, int]]:
    """The candidates on ``limits``: less what spilled on its architecture (``_SPILLED``;
    the row reductions take a few KB of shared memory, which every supported GPU has)."""
    spilled = arch.measured_failures(_SPILLED, limits)
    out = []
    for block in (1024, 2048, 4096, 8192):
        for warps in (4, 8, 16):
            if 8 <= block // (32 * warps) <= 32 and (block, warps) not in spilled:
                out.append({"BLOCK_V": block, "num_warps": warps, "num_stages": 1})
    return out


def _heuristic(vocab: int) -> dict[str, int]:
    """The single config used under the interpreter (and by the GPU kernel tests)."""
    return {"BLOCK_V": min(4096, max(16, triton.next_power_of_2(vocab))), "num_warps": 8}


tuning.register("linear_ce", _configs)

# the kernel overwrites its logits: the tuner must put them back after every trial
_ce_rows_tuned = tuning.DeviceAutotune(
    "linear_ce", _ce_rows_kernel, key=["V", "GRAD"], restore_value=["logits"]
)


# --------------------------------------------------------------------------- row steps

RowStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, bool], None]
"""(logits chunk [R, V], targets [R], loss out [R] fp32, scale, grad) -> None: writes the
rows' losses and, with ``grad``, (softmax - onehot) * scale over the logits."""


def ce_rows_triton(
    z: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor, scale: float, grad: bool
) -> None:
    """The row step as one launch of :func:`_ce_rows_kernel` (a program per row)."""
    rows, vocab = z.shape
    launch(
        "linear_ce", _ce_rows_kernel, _ce_rows_tuned(z.device),
        key=tuning.make_key(z.dtype, vocab), heuristic=lambda: _heuristic(vocab),
        grid=lambda m: (rows,), args=(z, targets, loss, vocab, z.stride(0), float(scale)),
        GRAD=grad,
    )  # fmt: skip


def ce_rows_torch(
    z: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor, scale: float, grad: bool
) -> None:
    """The row step in PyTorch (fp32; in place on fp32 logits, one fp32 copy otherwise)."""
    x = z.float()
    lse = torch.logsumexp(x, dim=1)
    loss.copy_(lse - x.gather(1, targets[:, None]).squeeze(1))
    if grad:
        x.sub_(lse[:, None]).exp_().mul_(scale)
        x[torch.arange(len(targets), device=z.device), targets] -= scale
        if x is not z:
            z.copy_(x)


# --------------------------------------------------------------------------- chunk loop

CHUNK_ELEMENTS = {"cuda": 1 << 25, "cpu": 1 << 23}
"""Logits per chunk: 64 MB in bf16 on a GPU (about 1,000 rows of a 33K vocabulary, four
chunks at bptt 200 x batch 20: the GEMMs stay large); 32 MB of fp32 on the CPU."""


def chunk_rows_for(vocab: int, device_type: str) -> int:
    """Rows per chunk for a vocabulary of ``vocab`` words on ``device_type``."""
    return max(1, CHUNK_ELEMENTS.get(device_type, CHUNK_ELEMENTS["cpu"]) // max(vocab, 1))


def linear_ce_chunks(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    rows_step: RowStep,
    chunk_rows: int,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Mean loss (0-d fp32) and, with ``want_grad``, its gradients (dh in hidden's dtype;
    dW and db fp32), ``chunk_rows`` rows at a time; inputs already checked."""
    n, d = hidden.shape
    vocab = weight.shape[0]
    loss_rows = torch.empty(n, dtype=torch.float32, device=hidden.device)
    acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 (float64 stays float64)
    dh = torch.empty_like(hidden) if want_grad else None
    dw = torch.zeros(vocab, d, dtype=acc, device=hidden.device) if want_grad else None
    db = None
    if want_grad and bias is not None:
        db = torch.zeros(vocab, dtype=acc, device=hidden.device)
    for r0 in range(0, n, chunk_rows):
        rows = slice(r0, r0 + chunk_rows)
        h = hidden[rows]
        z = h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())
        rows_step(z, targets[rows], loss_rows[rows], 1.0 / n, want_grad)
        if not want_grad:
            continue
        torch.mm(z, weight, out=dh[rows])
        if z.dtype == acc:
            dw.addmm_(z.t(), h)
        else:  # addmm_ needs one dtype: this chunk's product, then its fp32 sum
            dw += torch.mm(z.t(), h)
        if db is not None:
            db += z.sum(0, dtype=acc)
    return loss_rows.sum() / n, dh, dw, db


# --------------------------------------------------------------------------- launcher


def _check_float_inputs(fn, hidden, weight, bias, float64_ok: bool) -> None:
    """hidden, weight and bias: tensors of one storage dtype (float64 too where
    ``float64_ok``: the PyTorch path serves float64 models) on one device."""
    if float64_ok and isinstance(hidden, torch.Tensor) and hidden.dtype == torch.float64:
        for name, t in (("weight", weight), ("bias", bias)):
            if t is not None and (not isinstance(t, torch.Tensor) or t.dtype != hidden.dtype):
                got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{fn}: {name} has dtype {got}, must match hidden's float64")
            if t is not None and t.device != hidden.device:
                where = f"{t.device}, must match hidden's {hidden.device}"
                raise ValueError(f"{fn}: {name} is on {where}")
        return
    check_tensor(fn, "hidden", hidden)
    same = {"dtype": hidden.dtype, "device": hidden.device, "ref": "hidden"}
    check_tensor(fn, "weight", weight, **same)
    check_tensor(fn, "bias", bias, optional=True, **same)


def check_inputs(
    fn: str,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    float64_ok: bool = False,
) -> None:
    """One ``ValueError`` naming the bad input: shapes [N, D], [V, D], [V], [N]; one
    storage dtype and device; integer targets in [0, V) (one host sync)."""
    _check_float_inputs(fn, hidden, weight, bias, float64_ok)
    if hidden.dim() != 2 or hidden.shape[0] < 1 or hidden.shape[1] < 1:
        got = tuple(hidden.shape)
        raise ValueError(f"{fn}: hidden must be a non-empty [N, D], got shape {got}")
    n, d = hidden.shape
    if weight.dim() != 2 or weight.shape[1] != d or weight.shape[0] < 1:
        raise ValueError(f"{fn}: weight must be [V, {d}] (V >= 1), got shape {tuple(weight.shape)}")
    vocab = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (vocab,):
        raise ValueError(f"{fn}: bias must have shape ({vocab},), got {tuple(bias.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int64, torch.int32):
        got = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"{fn}: targets must be an int64 or int32 tensor, got {got}")
    if tuple(targets.shape) != (n,) or targets.device != hidden.device:
        raise ValueError(
            f"{fn}: targets must be [{n}] on {hidden.device}, got {tuple(targets.shape)} "
            f"on {targets.device}"
        )
    bad = ((targets < 0) | (targets >= vocab)).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise ValueError(
            f"{fn}: targets[{i}] = {int(targets[i])} is outside the vocabulary [0, {vocab}) "
            f"({len(bad)} such targets)"
        )


# --------------------------------------------------------------------------- autograd


class LinearCrossEntropyFunction(torch.autograd.Function):
    """The chunk loop computes the gradients in the forward; the backward scales them.
    Tied weights need nothing special: autograd adds dW into the shared parameter."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows_step, chunk_rows):
        loss, dh, dw, db = linear_ce_chunks(
            hidden, weight, bias, targets, rows_step=rows_step, chunk_rows=chunk_rows,
            want_grad=True,
        )  # fmt: skip
        ctx.save_for_backward(dh, dw, db)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, dloss):
        dh, dw, db = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        # out of place: a retained graph may run this backward again
        gh = (dh * dloss).to(dh.dtype)
        gw = (dw * dloss).to(w_dtype)
        gb = None if db is None else (db * dloss).to(b_dtype)
        return gh, gw, gb, None, None, None


def _apply(hidden, weight, bias, targets, rows_step: RowStep, chunk_rows: int) -> torch.Tensor:
    """Through autograd when an input needs a gradient, else the loss alone."""
    wants = any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    if torch.is_grad_enabled() and wants:
        return LinearCrossEntropyFunction.apply(
            hidden, weight, bias, targets, rows_step, chunk_rows
        )
    loss, *_ = linear_ce_chunks(
        hidden, weight, bias, targets, rows_step=rows_step, chunk_rows=chunk_rows,
        want_grad=False,
    )  # fmt: skip
    return loss


# --------------------------------------------------------------------------- reference


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``F.linear(hidden, weight, bias)`` (fp32 loss) in PyTorch.

    ``chunk_rows`` None: :func:`chunk_rows_for` the device. Rows that fit one chunk run
    ``F.cross_entropy`` of the fp32 (or float64) logits through autograd; more run the
    chunk loop with :func:`ce_rows_torch`, so at most one chunk of logits exists.
    Inputs are not checked here (:func:`linear_cross_entropy` checks them).
    """
    rows = chunk_rows or chunk_rows_for(weight.shape[0], hidden.device.type)
    if hidden.shape[0] <= rows:  # fp32 logits (float64 stays float64, as in the chunks)
        logits = F.linear(hidden, weight, bias)
        return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets)
    return _apply(hidden, weight, bias, targets, ce_rows_torch, rows)


# --------------------------------------------------------------------------- public


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    backend: str = "auto",
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the LM head ``hidden @ weight.T + bias`` against ``targets``,
    differentiable in hidden, weight and bias, without the [N, V] logits in memory.

    Args:
        hidden: [N, D] the decoder's input (the last layer's output, flattened over T, B).
        weight: [V, D] the decoder weight (tied or not: a tied embedding receives dW).
        bias: [V] or None. hidden, weight and bias share one dtype (fp32, fp16 or bf16;
            float64 too on the PyTorch path) and device; logits and gradients accumulate
            in fp32 (float64 stays float64 on the PyTorch path).
        targets: [N] int64/int32 word ids, every one in [0, V) (none is ignored).
        backend: "auto" (Triton on CUDA tensors, else the reference), "torch", "triton".
        chunk_rows: rows per chunk; None sizes a chunk to 32M logits on a GPU, 8M on the
            CPU (:func:`chunk_rows_for`).

    Returns:
        A 0-d fp32 tensor, the mean over the N rows. Gradients come back in the inputs'
        dtypes.

    Raises:
        ValueError: for a wrong shape, dtype or device, a target outside [0, V), or a
            chunk_rows below 1, naming the input.
    """
    fn = "linear_cross_entropy"
    triton_path = use_triton(backend, hidden, weight, bias, targets)
    check_inputs(fn, hidden, weight, bias, targets, float64_ok=not triton_path)
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"{fn}: chunk_rows must be >= 1, got {chunk_rows}")
    if triton_path:
        rows = chunk_rows or chunk_rows_for(weight.shape[0], "cpu" if interpreting() else "cuda")
        return _apply(hidden, weight, bias, targets.long(), ce_rows_triton, rows)
    return linear_cross_entropy_reference(
        hidden, weight, bias, targets.long(), chunk_rows=chunk_rows
    )
