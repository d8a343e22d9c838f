"""Every kernel candidate fits sm_90: compiled for sm_90 with Triton's bundled ptxas (no
GPU), none spills or needs more than 232,448 B of shared memory per block; and a stored or
saved config that is no longer a candidate is ignored with a warning.

The compile check runs on a representative set (the LSTM's largest tiles in fp32, every
fo-pool backward chunk on the longest forward chunk, the element-wise synthesizer), on a
process pool, so that it stays under a minute of CPU on a small machine; ``altgrad-tune
--check-configs`` compiles every candidate at every shipped recipe's shapes.
"""

from pathlib import Path

import pytest
import torch
from altgrad_triton.kernels import lstm, tuning
from altgrad_triton.tune import configcheck


def test_num_warps_counts_the_epilogue_tiles():
    """About 14 fp32 [BLOCK_B, BLOCK_H] tiles live at once: 4 warps hold 32 x 32 at most;
    BLOCK_B=128 needs 8 or 16, and a tile that would need more is not offered."""
    assert lstm._num_warps(32, 32) == 4
    assert lstm._num_warps(128, 16) == 8  # was 4: 255 registers and spills
    assert lstm._num_warps(32, 128) == 16  # the backward's BLOCK_H=128 at B=20: was 4
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


def _representative() -> list:
    """The riskiest candidates: the LSTM's largest tiles per BLOCK_B in fp32 (IEEE dots),
    fo-pool's backward on the forward's longest checkpoints, the element-wise pair."""
    specs = []
    for batch in configcheck.LSTM_BATCHES:
        for spec in configcheck.lstm_specs(batch, 1550, torch.float32, train=True):
            m = dict(spec.meta)
            if m["BLOCK_B"] * m["BLOCK_H"] * m["BLOCK_K"] >= 2**17:
                specs.append(spec)
    specs += [s for s in configcheck.fo_pool_specs(20, 1550, torch.float32, True, True)
              if s.kernel == "fo_pool_bwd" and dict(s.meta)["CKPT_EVERY"] == 32]  # fmt: skip
    specs += configcheck.elementwise_specs(20 * 4650, 50)
    return specs


def test_representative_candidates_compile_for_sm90_without_spills():
    import triton

    if not any((Path(triton.__file__).parent / "backends" / "nvidia" / "bin").glob("ptxas*")):
        pytest.skip("this Triton has no bundled ptxas")
    results = configcheck.check_specs(_representative())
    bad = [(r.spec.kernel, r.spec.config, r.error or configcheck._why(r)) for r in results
           if not r.fits]  # fmt: skip
    assert not bad, bad
