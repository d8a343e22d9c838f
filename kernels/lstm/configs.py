"""Which configs the LSTM step kernels run with: the tuning candidates per architecture,
fitted to its registers and shared memory, the launch modes as tuning choices, the single
config the interpreter uses, the autotuners, the checking of a forced meta, the tuning key
(``config_key``) and the ``tl.dot`` input precision.

A config is a tile (BLOCK_B, BLOCK_H, BLOCK_K with num_warps and num_stages), a K split
(SPLIT_K, a runtime argument: no recompile) and a launch mode (LAUNCH indexing
``LAUNCH_MODES``, GRAPH_STEPS), chosen by the house rule (``_common.choose_meta``): a
meta given > a ``tuning`` override for ("lstm_fwd" / "lstm_bwd", ``config_key``) > the
heuristic under the interpreter > ``@triton.autotune`` over the tiles (plain launches).

Apart from the kernels because it changes for other reasons (a new GPU, a new Triton
release, a measured spill) and is read by ``altgrad-tune --check-configs`` and the
recorded config check without launching anything. fp32 is fp32: the fp32 ``tl.dot`` uses
TF32 on a GPU only when ``torch.backends.cuda.matmul.allow_tf32`` is True (the switch
``nn.Linear`` follows; off by default), IEEE fp32 otherwise and always under the
interpreter (``_dot_precision``).
"""

from __future__ import annotations

import torch
import triton

from .. import arch, tuning
from .._common import choose_meta
from .._dispatch import interpreting
from .step import _lstm_bwd_step_kernel, _lstm_fwd_step_kernel

_FWD, _BWD = "lstm_fwd", "lstm_bwd"  # ``tuning`` kernel names
_TILE_KEYS = ("BLOCK_B", "BLOCK_H", "BLOCK_K")
_META_KEYS = (*_TILE_KEYS, "SPLIT_K")
_LAUNCH_KEYS = ("LAUNCH", "GRAPH_STEPS")  # optional meta keys: how the steps are launched
_MAX_BLOCK = 128  # the largest BLOCK_H / BLOCK_K: W_hh's row stride is H rounded up to it
LAUNCH_MODES = ("plain", "pdl", "graph", "graph-pdl")
"""The ways to launch a segment's steps (``launch.py``); a meta's ``LAUNCH`` indexes it."""
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
