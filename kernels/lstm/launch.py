"""Launching an LSTM segment: the forward and backward launchers, which check the inputs,
pick the config, allocate the outputs and run the segment's steps, and the machinery that
runs the steps in a launch mode.

Launch modes (``LAUNCH_MODES``): "plain", one ordinary launch per step; "pdl",
programmatic dependent launch (Hopper), where a step's programs start while the previous
step finishes and wait in ``gdc_wait``; "graph", CUDA graphs of up to ``GRAPH_STEPS``
steps that read the step from a device integer and advance it, replayed; "graph-pdl",
both. Every mode gives the same bits; a PDL launch or a graph capture that fails falls
back to plain launches with a warning, and a PDL mode runs without PDL (warning) where it
is missing. The first step is always an ordinary launch: it autotunes and pins the config
(``_common.PinningLauncher``) unless one was chosen.

A file of its own because scheduling the steps (modes, graphs, fallbacks) is what the
segment adds to a one-shot launch, and it reads best next to the two launchers that use
it; the autograd function and the public op (the package's ``__init__``) call those.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from .. import tuning
from .._common import PinningLauncher, check_tensor, pdl_unavailable
from .configs import (
    _BWD,
    _FWD,
    _LAUNCH_KEYS,
    _MAX_BLOCK,
    GRAPH_STEPS,
    LAUNCH_MODES,
    _dot_precision,
    _lstm_bwd_step_tuned,
    _lstm_fwd_step_tuned,
    _n_slices,
    _pick_meta,
    config_key,
)
from .step import _lstm_bwd_step_kernel, _lstm_fwd_step_kernel
from .workspace import SplitKWorkspace, _reduction, _use_workspace


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
