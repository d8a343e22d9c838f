"""Every kernel candidate fits sm_90: compiled for sm_90 with Triton's bundled ptxas (no
GPU), none spills or needs more than 232,448 B of shared memory per block; and a stored or
saved config that is no longer a candidate is ignored with a warning.

The compile check runs on a representative set (``_representative``), on a process pool,
so that it stays near a minute of CPU on a small machine; ``altgrad-tune
--check-configs`` compiles every candidate at every shipped recipe's shapes.
"""

from pathlib import Path

import pytest
import torch
from altgrad_triton.kernels import lstm, tuning
from altgrad_triton.kernels.elementwise import configs_elementwise_bwd
from altgrad_triton.kernels.fo_pooling import configs_fo_pool_bwd, configs_fo_pool_fwd

from altgrad_triton.tune import configcheck
from tests.helpers import require_bundled_ptxas


def test_num_warps_counts_the_epilogue_tiles():
    """About 14 fp32 [BLOCK_B, BLOCK_H] tiles live at once: 4 warps hold 32 x 32 at most;
    BLOCK_B=128 needs 8 or 16, and a tile that would need more is not offered."""
    assert lstm._num_warps(32, 32) == 4
    assert lstm._num_warps(128, 16) == 8  # was 4: 255 registers and spills
    assert lstm._num_warps(32, 128, gates=1) is None  # backward BLOCK_H=128 at B=20: was 4
    assert lstm._num_warps(128, 64) is None


def test_no_lstm_tile_overflows_sm90_shared_memory_in_fp32():
    """stages x fp32 operand tiles per stage within the limit: (32, 64, 128) forward needed
    288 KB, (128, 64, 128) 576 KB, backward (128, 32, 128) 240 KB."""
    for meta in lstm.configs_lstm_fwd():
        rows = 4 * meta["BLOCK_H"]
        per_stage = (meta["BLOCK_B"] + rows) * meta["BLOCK_K"] * 4
        assert meta["num_stages"] * per_stage <= configcheck.SM90_SHARED_LIMIT, meta
    for meta in lstm.configs_lstm_bwd():
        per_stage = (meta["BLOCK_B"] + meta["BLOCK_H"]) * meta["BLOCK_K"] * 4
        assert meta["num_stages"] * per_stage <= configcheck.SM90_SHARED_LIMIT, meta
    tiles = {(m["BLOCK_B"], m["BLOCK_H"], m["BLOCK_K"]) for m in lstm.configs_lstm_fwd()}
    assert (32, 64, 128) not in tiles and (128, 64, 128) not in tiles


def test_a_saved_config_that_is_no_longer_a_candidate_is_ignored():
    old = {"BLOCK_B": 32, "BLOCK_H": 64, "BLOCK_K": 128, "SPLIT_K": 2, "num_warps": 4,
           "num_stages": 3}  # fmt: skip
    good = dict(lstm.configs_lstm_fwd()[0])
    key = ("float32", 32, 1152)
    try:
        with pytest.warns(UserWarning, match="no longer a candidate"):
            tuning.restore_overrides([("lstm_fwd", key, old)])
        assert tuning.get_override("lstm_fwd", key) is None
        good.pop("LAUNCH"), good.pop("GRAPH_STEPS", None)  # an autotuner's pin has none
        tuning.restore_overrides([("lstm_fwd", key, good)])
        assert tuning.get_override("lstm_fwd", key) == good
    finally:
        tuning.clear_overrides("lstm_fwd")


def test_pointwise_backward_candidates_stay_below_the_spill_point():
    """fo_pool backward runs STEPS = max(CHUNK, the forward's CHUNK) steps, and a stored
    backward winner may meet any forward candidate: at most 8 elements per thread at the
    longest forward chunk (16 spilled). Elementwise backward: at most 8 rows per warp."""
    longest = max(m["CHUNK"] for m in configs_fo_pool_fwd())
    bwd = configs_fo_pool_bwd()
    assert bwd
    for m in bwd:
        assert m["BLOCK_H"] * max(m["CHUNK"], longest) // (32 * m["num_warps"]) <= 8, m
    for m in configs_elementwise_bwd():
        assert m["BLOCK_N"] // m["num_warps"] <= 8, m


def _lstm_values(m: dict, gates: int) -> float:
    """fp32 values per thread at the tile's peak (the K loop or the epilogue)."""
    bb, bh, bk = m["BLOCK_B"], m["BLOCK_H"], m["BLOCK_K"]
    loop = gates * bb * bh + (bb + gates * bh) * bk
    return max(loop, 14 * bb * bh) / (32 * m["num_warps"])


def _largest(specs: list, size, n: int = 1) -> list:
    return sorted(specs, key=lambda s: size(dict(s.meta)), reverse=True)[:n]


def _representative() -> list:
    """The riskiest candidates (most values per thread): per BLOCK_B the LSTM's largest
    forward and backward tile in fp32 (IEEE dots: operands in registers), fo-pool's two
    largest backward tiles on the forward's longest checkpoints, the largest element-wise
    tiles. 14 kernels: about a minute of CPU."""
    specs = []
    for batch in configcheck.LSTM_BATCHES:
        both = configcheck.lstm_specs(batch, 1550, torch.float32, train=True, prec="ieee")
        for kernel, g in (("lstm_fwd", 4), ("lstm_bwd", 1)):
            mine = [s for s in both if s.kernel == kernel]
            specs += _largest(mine, lambda m, g=g: _lstm_values(m, g))
    longest = max(m["CHUNK"] for m in configs_fo_pool_fwd())
    fo = [s for s in configcheck.fo_pool_specs(20, 1550, torch.float32, True, True)
          if s.kernel == "fo_pool_bwd" and dict(s.meta)["CKPT_EVERY"] == longest]  # fmt: skip
    specs += _largest(fo, lambda m: m["BLOCK_H"] * max(m["CHUNK"], longest) / m["num_warps"], 2)
    for kernel in ("elementwise_fwd", "elementwise_bwd"):
        ew = [s for s in configcheck.elementwise_specs(20 * 4650, 50) if s.kernel == kernel]
        specs += _largest(ew, lambda m: (m["BLOCK_N"] / m["num_warps"], m["BLOCK_N"]))
    return specs


def _check(specs: list) -> list:
    require_bundled_ptxas()
    results = configcheck.check_specs(specs)
    return [(r.spec.kernel, r.spec.config, r.error or configcheck._why(r)) for r in results
            if not r.fits]  # fmt: skip


def test_representative_lstm_candidates_compile_for_sm90_without_spills():
    bad = _check([s for s in _representative() if s.kernel.startswith("lstm")])
    assert not bad, bad


def test_representative_pointwise_candidates_compile_for_sm90_without_spills():
    """Before the pruning, fo_pool backward tiles at 16+ elements per thread (at STEPS) and
    elementwise backward BLOCK_N 32 on 2 warps / 64 on 4 spilled (8 B to 17.7 KB)."""
    bad = _check([s for s in _representative() if not s.kernel.startswith("lstm")])
    assert not bad, bad


def test_every_authors_scan_candidate_compiles_for_sm90_without_spills():
    """The authors' synthesizer's scan (always fp32) at the paper's N = 20 x 5,450 rows of
    50 units: every forward and backward candidate, reduce and fix-up, and the carry pass
    both ways (34 kernels; at most 180 registers and 32 KB of shared memory when added)."""
    specs = configcheck.authors_scan_specs(109_000, 50, torch.float32)
    kernels = {(s.kernel, s.fn) for s in specs}
    tiles = len(tuning.candidates("authors_scan_fwd")) + len(tuning.candidates("authors_scan_bwd"))
    assert len(kernels) == 5 and len(specs) == 2 * tiles + 2
    bad = _check(specs)
    assert not bad, bad


@pytest.mark.parametrize(
    ("synthesizer", "module"), [("toolkit", "elementwise"), ("authors", "authors_synth")]
)
def test_a_synthetic_recipe_checks_its_synthesizer_kernels(synthesizer, module):
    """The recipe check compiles the kernels the recipe's synthesizer runs (it once looked
    for a synthesizer named "elementwise", which no recipe has, and checked none)."""
    from altgrad_triton import recipe as recipes
    from altgrad_triton.tune import jobs

    root = Path(__file__).resolve().parents[1]
    r = recipes.load(root / "recipes/wt2/alt-rb5.toml", [f"synthetic.synthesizer='{synthesizer}'"])
    specs = configcheck.recipe_specs(jobs.shapes_from_recipe(r), [torch.bfloat16])
    assert {s.module for s in specs if s.module in ("elementwise", "authors_synth")} == {module}
