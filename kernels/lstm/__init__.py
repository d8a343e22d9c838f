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

A package rather than one module because the family outgrew a screenful of ideas; its
files keep the fixed sections of every family module, in the same reading order:

1. kernels: ``step.py``, the two ``@triton.jit`` step kernels;
2. configs: ``configs.py``, the tuning candidates fitted per architecture, the
   interpreter's heuristic, the autotuners, ``config_key`` and the dot precision;
3. launchers: ``workspace.py``, the split-K scratch (``lstm_workspace``), then
   ``launch.py``, the forward and backward launchers and the launch modes;
4. autograd: ``LSTMSegmentFunction``, here;
5. reference: ``reference.py``, the plain PyTorch recurrence;
6. public: ``lstm_segment``, here.

Every name the rest of the package, its tools and the tests use is importable from here as
``kernels.lstm.<name>``, the kernels and the config helpers that ``tune/`` and the tests
read included. The autograd function and the op call the launchers through this module's
names, so replacing ``lstm_segment_forward`` or ``lstm_segment_backward`` here (as the
guard's tests do) replaces what they call; a name used inside a submodule (such as
``launch._run_graph``) is replaced in that submodule.
"""

from __future__ import annotations

import torch

from .._dispatch import use_triton

# The public names (``__all__``) and the internals read as kernels.lstm.<name> elsewhere:
# tune/configcheck (the kernels, _block_b, _dot_precision_for), the config-fit and compile
# tests, and tests/gpu.
from .configs import (  # noqa: F401 - re-exported
    GRAPH_STEPS,
    LAUNCH_MODES,
    _block_b,
    _dot_precision_for,
    _lstm_bwd_step_tuned,
    _lstm_fwd_step_tuned,
    _num_stages,
    _num_warps,
    _prune_block_b,
    _stage_bytes,
    _step_tiles,
    _tile,
    _values_budget,
    config_key,
    configs_lstm_bwd,
    configs_lstm_fwd,
)
from .launch import (  # noqa: F401 - re-exported
    _check_inputs,
    _Stepper,
    lstm_segment_backward,
    lstm_segment_forward,
)
from .reference import lstm_segment_reference
from .step import _lstm_bwd_step_kernel, _lstm_fwd_step_kernel  # noqa: F401 - re-exported
from .workspace import (  # noqa: F401 - re-exported
    SplitKWorkspace,
    _candidates_for,
    lstm_workspace,
)

__all__ = [
    "GRAPH_STEPS",
    "LAUNCH_MODES",
    "LSTMSegmentFunction",
    "SplitKWorkspace",
    "config_key",
    "configs_lstm_bwd",
    "configs_lstm_fwd",
    "lstm_segment",
    "lstm_segment_backward",
    "lstm_segment_forward",
    "lstm_segment_reference",
    "lstm_workspace",
]

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
