"""Every kernel candidate fits every supported GPU: offered per architecture (sm_80, sm_86,
sm_89, sm_90: ``kernels.arch``), sized by its limits, compiled for it with Triton's bundled
ptxas (no GPU), none spills or needs more shared memory per block than it has; the
autotuners and a restored config respect the device.

Every candidate of every family for every architecture is ~1,800 distinct kernels per
Triton version, half an hour of compiling on two cores; CI reads them from the record
``altgrad-tune --check-configs --record tests/fixtures/config_fit`` writes per Triton
version (``altgrad_triton.tune.fitrecord``): it asserts the record covers every spec of
the full check with the kernels' current sources, that none would fail, and compiles a
sample (per architecture and kernel function, the most registers and the most shared
memory) again to confirm the record still says what the compiler says.
"""

import dataclasses
import types
from pathlib import Path

import pytest
import torch
from altgrad_triton.kernels import arch, authors_synth, lstm, tuning
from altgrad_triton.kernels.elementwise import configs_elementwise_bwd
from altgrad_triton.kernels.fo_pooling import configs_fo_pool_bwd, configs_fo_pool_fwd

from altgrad_triton.tune import configcheck, fitrecord
from tests.helpers import require_bundled_ptxas

ROOT = Path(__file__).resolve().parents[2]
REFRESH = "altgrad-tune --check-configs --record tests/fixtures/config_fit"


# --------------------------------------------------------------------------- limits


def test_the_architecture_table():
    assert arch.ARCHS == ("sm_80", "sm_86", "sm_89", "sm_90")
    shared = {a: lim.shared_per_block for a, lim in arch.SUPPORTED.items()}
    assert shared == {"sm_80": 166_912, "sm_86": 101_376, "sm_89": 101_376, "sm_90": 232_448}
    for lim in arch.SUPPORTED.values():
        assert (lim.registers_per_thread, lim.registers_per_sm) == (255, 65_536)
        assert lim.registers_cap(8) == 255 and lim.registers_cap(16) == 128
    assert arch.known("86") is arch.known(86) is arch.known((8, 6)) is arch.SUPPORTED["sm_86"]
    with pytest.raises(ValueError, match="supported: sm_80, sm_86, sm_89, sm_90"):
        arch.known("sm_75")
    # a capability outside the table: the smallest shared memory in it, under its own name
    assert arch.by_capability((12, 0)).shared_per_block == 101_376
    assert arch.by_capability((12, 0)).arch == "sm_120"


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device as torch would describe it, without one: ``fake_gpu(major, minor,
    **props)``; props as ``torch.cuda.get_device_properties`` has them (or lacks them)."""

    def install(major, minor, **props):
        dev = types.SimpleNamespace(major=major, minor=minor, multi_processor_count=84, **props)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: dev)
        arch._device_limits.cache_clear()

    yield install
    arch._device_limits.cache_clear()


def test_the_present_device_is_read_from_the_device(fake_gpu):
    fake_gpu(8, 6, shared_memory_per_block_optin=101_376, regs_per_multiprocessor=65_536)
    here = arch.limits()
    assert (here.arch, here.shared_per_block, here.sms) == ("sm_86", 101_376, 84)
    assert arch.limits("cuda:0") == here and arch.limits(torch.device("cpu")) is None
    # a torch without shared_memory_per_block_optin: the table, by capability
    fake_gpu(8, 0)
    assert arch.limits().shared_per_block == 166_912
    # a GPU outside the table that reports its limit: that limit
    fake_gpu(7, 5, shared_memory_per_block_optin=65_536)
    assert (arch.limits().arch, arch.limits().shared_per_block) == ("sm_75", 65_536)


def test_candidates_follow_the_present_device(fake_gpu):
    fake_gpu(8, 6, shared_memory_per_block_optin=101_376)
    for kernel in tuning.kernels():
        assert tuning.candidates(kernel) == tuning.candidates(kernel, "sm_86"), kernel
    assert tuning.target_name() == "sm_86"
    fake_gpu(9, 0, shared_memory_per_block_optin=232_448)
    assert tuning.candidates("lstm_fwd") == tuning.candidates("lstm_fwd", "sm_90")


def test_without_a_gpu_the_candidates_are_sized_for_every_architecture_at_once(monkeypatch):
    """No GPU, no name: sized for ``arch.ANY`` (the least shared memory and the oldest
    capability of the four), less every config that spilled on any of them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tuning.target_name() == "every supported architecture"
    assert arch.limits() is None
    assert arch.ANY.shared_per_block == 101_376 and arch.ANY.capability == (8, 0)
    for kernel in tuning.kernels():
        assert tuning.candidates(kernel) == tuning.candidates(kernel, arch.ANY), kernel
        assert tuning.candidates(kernel), kernel
    for m in tuning.candidates("lstm_fwd"):
        need = lstm._stage_bytes(m["BLOCK_B"], 4 * m["BLOCK_H"], m["BLOCK_K"], m["num_stages"])
        assert need <= min(lim.shared_per_block for lim in arch.SUPPORTED.values())
    # what spilled on some architecture is in no one's way here
    from altgrad_triton.kernels import fo_pooling

    anywhere = arch.measured_failures(fo_pooling._FWD_SPILLED, arch.ANY)
    assert anywhere >= arch.measured_failures(fo_pooling._FWD_SPILLED, arch.known("sm_90"))
    for m in tuning.candidates("fo_pool_fwd"):
        assert (m["BLOCK_H"], m["CHUNK"], m["num_warps"]) not in anywhere
    assert {m["LAUNCH"] for m in tuning.candidates("lstm_fwd")} == {0, 1, 2, 3}


def test_measured_failures_by_architecture_and_triton_release():
    table = {"sm_80": {"3.6": {"a"}, "3.9": {"b"}}, "sm_90": {"3.9": {"c"}}}
    sm80, sm86 = arch.known("sm_80"), arch.known("sm_86")
    assert arch.measured_failures(table, sm80, "3.6") == {"a"}
    assert arch.measured_failures(table, sm80, "3.9") == {"b"}
    assert arch.measured_failures(table, sm86, "3.9") == set()  # measured: nothing spilled
    assert arch.measured_failures(table, sm80, "3.7") == {"a", "b"}  # not measured: both
    assert arch.measured_failures(table, arch.ANY, "3.9") == {"b", "c"}  # any arch, 3.9
    assert arch.measured_failures(table, arch.ANY, "3.7") == {"a", "b", "c"}


# --------------------------------------------------------------------------- LSTM sizing


def test_num_warps_counts_the_epilogue_tiles(monkeypatch):
    """About 14 fp32 [BLOCK_B, BLOCK_H] tiles live at once: 4 warps hold 32 x 32 at most;
    BLOCK_B=128 needs 8 or 16, and a tile that would need more is not offered. On sm_8x
    Triton 3.9's ptxas spills from 56 values per thread: 48 there."""
    sm90, sm86 = arch.known("sm_90"), arch.known("sm_86")
    assert lstm._num_warps(32, 32, 4, 64, sm90) == 4
    assert lstm._num_warps(128, 16, 4, 64, sm90) == 8  # was 4: 255 registers and spills
    assert lstm._num_warps(32, 128, 1, 64, sm90) is None  # backward BLOCK_H=128 at B=20
    assert lstm._num_warps(128, 64, 4, 64, sm90) is None
    for release, warps in (("3.6", 4), ("3.9", None)):
        monkeypatch.setattr(arch, "triton_release", lambda r=release: r)
        assert lstm._values_budget(sm86) == (112 if release == "3.6" else 48)
        assert lstm._num_warps(32, 32, 4, 64, sm86) == warps  # 112 values at 4 warps
        assert lstm._num_warps(32, 16, 4, 64, sm86) == (4 if release == "3.6" else 8)
    # a tile measured to spill takes the next warps, then stages, or goes: on sm_90
    # 16 x 16 x 128 spilled on 4 warps (both releases), 32 x 32 x 128 on 8 with Triton 3.9
    for release in ("3.6", "3.9"):
        monkeypatch.setattr(arch, "triton_release", lambda r=release: r)
        assert lstm._num_warps(16, 16, 4, 128, sm90) == 4
        assert lstm._tile(16, 16, 128, 4, sm90)["num_warps"] == 8
        tile = lstm._tile(32, 32, 128, 4, sm90)
        assert (tile is None) == (release == "3.9")
        assert tile is None or (tile["num_warps"], tile["num_stages"]) == (8, 3)


def test_stages_are_sized_for_each_architectures_shared_memory():
    """Triton keeps stages - 1 copies of the fp32 operand chunks (measured): every offered
    tile's fit on its architecture; the 147,456 B forward tile of sm_90 and sm_80
    (16 x 32 x 128, 3 stages) would take 2 on sm_86/sm_89 (73,728 B of 101,376)."""
    for a, lim in arch.SUPPORTED.items():
        for kernel, gates in (("lstm_fwd", 4), ("lstm_bwd", 1)):
            for m in tuning.candidates(kernel, a):
                rows = gates * m["BLOCK_H"]
                need = lstm._stage_bytes(m["BLOCK_B"], rows, m["BLOCK_K"], m["num_stages"])
                assert need <= lim.shared_per_block, (a, kernel, m)
    stages = {a: lstm._num_stages(16, 4 * 32, 128, arch.known(a)) for a in arch.ARCHS}
    assert stages == {"sm_80": 3, "sm_86": 2, "sm_89": 2, "sm_90": 3}
    assert lstm._stage_bytes(16, 128, 128, 3) == 147_456
    assert lstm._num_stages(64, 4 * 64, 128, arch.known("sm_86")) is None  # 163,840 B


def test_a_batch_block_without_a_tile_falls_back_to_every_tile():
    """sm_90 keeps a tile for every BLOCK_B; where an architecture offers none for the
    batch's block (sm_8x with Triton 3.9: 16 and 32 only), the autotuner and the workspace
    take every tile (more batch blocks, each reading W_hh)."""
    assert {m["BLOCK_B"] for m in tuning.candidates("lstm_fwd", "sm_90")} == {16, 32, 64, 128}
    for a in arch.ARCHS:
        for kernel in ("lstm_fwd", "lstm_bwd"):
            blocks = {m["BLOCK_B"] for m in tuning.candidates(kernel, a)}
            assert {16, 32} <= blocks, (a, kernel)
    for a in arch.ARCHS:
        configs = lstm._lstm_fwd_step_tuned(a).configs
        kept = lstm._prune_block_b(configs, {"B": 80})
        metas = lstm._candidates_for("fwd", 80, a)
        if any(c.kwargs["BLOCK_B"] == 128 for c in configs):
            assert kept and all(c.kwargs["BLOCK_B"] == 128 for c in kept)
            assert metas and all(m["BLOCK_B"] == 128 for m in metas)
        else:
            assert kept == list(configs) and len(metas) == len(configs)


# --------------------------------------------------------------------------- autotune


def test_autotuners_are_built_per_device_over_its_candidates():
    """``@triton.autotune``'s list is the device's candidates (the LSTM's as step tiles):
    an sm_86 never tries a tile sized for sm_90's shared memory."""
    sm86 = lstm._lstm_fwd_step_tuned("sm_86")
    assert sm86 is lstm._lstm_fwd_step_tuned(arch.SUPPORTED["sm_86"])  # built once
    for a, lim in arch.SUPPORTED.items():
        tuned = lstm._lstm_fwd_step_tuned(a)
        tiles = lstm._step_tiles(tuning.candidates("lstm_fwd", a))
        assert [(c.kwargs, c.num_warps, c.num_stages) for c in tuned.configs] == [
            ({k: v for k, v in m.items() if k.isupper()}, m["num_warps"], m["num_stages"])
            for m in tiles
        ]
        for c in tuned.configs:
            need = lstm._stage_bytes(c.kwargs["BLOCK_B"], 4 * c.kwargs["BLOCK_H"],
                                     c.kwargs["BLOCK_K"], c.num_stages)  # fmt: skip
            assert need <= lim.shared_per_block

    def listed(tuned):
        return [(c.kwargs, c.num_warps, c.num_stages) for c in tuned.configs]

    assert listed(sm86) != listed(lstm._lstm_fwd_step_tuned("sm_90"))
    from altgrad_triton.kernels import elementwise, fo_pooling, linear_ce, sg_loss

    for tuned in (fo_pooling._fo_pool_fwd_tuned, fo_pooling._fo_pool_bwd_tuned,
                  elementwise._ew_fwd_tuned, elementwise._ew_bwd_tuned,
                  sg_loss._sg_loss_tuned, linear_ce._ce_rows_tuned):  # fmt: skip
        for a in arch.ARCHS:
            got = [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
                   for c in tuned(a).configs]  # fmt: skip
            assert got == tuning.candidates(tuned.kernel, a), (tuned.kernel, a)


def test_the_authors_scan_gpu_defaults_are_candidates_everywhere():
    for kernel, meta in authors_synth._GPU_DEFAULT.items():
        for a in arch.ARCHS:
            assert meta in tuning.candidates(kernel, a), (kernel, a)


# --------------------------------------------------------------------------- restoring


def test_a_saved_config_that_does_not_fit_this_gpu_is_ignored(monkeypatch):
    """A config pinned on an H100 (3 stages of 16 x 32 x 128: 147,456 B) is not a
    candidate on an sm_86 (101,376 B per block): ignored there with a warning, kept on
    sm_90; without a GPU, kept (some architecture offers it), unless none does."""
    big = {
        "BLOCK_B": 16,
        "BLOCK_H": 32,
        "BLOCK_K": 128,
        "SPLIT_K": 2,
        "num_warps": 8,
        "num_stages": 3,
    }  # fmt: skip (sm_90's; on sm_86 3 stages would need 147,456 B)
    old = {"BLOCK_B": 32, "BLOCK_H": 64, "BLOCK_K": 128, "SPLIT_K": 2, "num_warps": 4,
           "num_stages": 3}  # fmt: skip
    key = ("float32", 16, 1152)
    assert tuning.is_candidate("lstm_fwd", big, "sm_90")
    assert not tuning.is_candidate("lstm_fwd", big, "sm_86")
    try:
        with pytest.warns(UserWarning, match="no longer a candidate on sm_86"):
            tuning.restore_overrides([("lstm_fwd", key, big)], "sm_86")
        assert tuning.get_override("lstm_fwd", key) is None
        tuning.restore_overrides([("lstm_fwd", key, big)], "sm_90")
        assert tuning.get_override("lstm_fwd", key) == big
        tuning.clear_overrides("lstm_fwd")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        tuning.restore_overrides([("lstm_fwd", list(key), big)])
        assert tuning.get_override("lstm_fwd", key) == big
        with pytest.warns(UserWarning, match="no longer a candidate on any supported"):
            tuning.restore_overrides([("lstm_fwd", key, old)])
        assert tuning.get_override("lstm_fwd", key) == big  # the old one was not forced
    finally:
        tuning.clear_overrides("lstm_fwd")


def test_pointwise_backward_candidates_stay_below_the_spill_point():
    """fo_pool backward runs STEPS = max(CHUNK, the forward's CHUNK) steps, and a stored
    backward winner may meet any forward candidate: at most 8 elements per thread at the
    longest forward chunk (16 spilled). Elementwise backward: at most 8 rows per warp."""
    for a in arch.ARCHS:
        longest = max(m["CHUNK"] for m in configs_fo_pool_fwd(a))
        bwd = configs_fo_pool_bwd(a)
        assert bwd
        for m in bwd:
            assert m["BLOCK_H"] * max(m["CHUNK"], longest) // (32 * m["num_warps"]) <= 8, m
        for m in configs_elementwise_bwd(a):
            assert m["BLOCK_N"] // m["num_warps"] <= 8, m


# --------------------------------------------------------------------------- the check


def test_specs_that_compile_alike_are_compiled_once():
    """H=1150 and H=1550 (neither divisible by 16) specialise alike; H=400 and B=1 do not."""
    key = {(b, h): {configcheck.compile_key(s) for s in
                    configcheck.lstm_specs(b, h, torch.bfloat16, True, arch="sm_86")}
           for b, h in ((20, 1150), (20, 1550), (20, 400), (1, 1550))}  # fmt: skip
    assert key[(20, 1150)] == key[(20, 1550)]
    assert not key[(20, 1550)] & key[(20, 400)] and not key[(20, 1550)] & key[(1, 1550)]
    spec = configcheck.lstm_specs(20, 1550, torch.bfloat16, True, arch="sm_86")[0]
    other = dataclasses.replace(spec, arch="sm_89")
    assert configcheck.compile_key(spec) != configcheck.compile_key(other)


@pytest.fixture(scope="module")
def recorded():
    """The full check's specs looked up in the installed Triton's record."""
    path = fitrecord.record_path(ROOT / fitrecord.DEFAULT_DIR)
    if not path.exists():
        pytest.fail(f"no config-fit record for Triton {fitrecord.triton_version()} ({path}); "
                    f"make it with: {REFRESH}")  # fmt: skip
    specs = configcheck.check_scope(configcheck.shipped_recipes(ROOT))
    return specs, fitrecord.lookup(fitrecord.load(path), specs)


def test_the_record_covers_every_candidate_on_every_architecture(recorded):
    specs, found = recorded
    assert {s.arch for s in specs} == set(arch.ARCHS)
    for name, gone in (("missing", found.missing), ("stale (kernel source changed)", found.stale)):
        shown = "; ".join(f"{s.arch} {s.kernel} {s.dtype} {s.config} ({s.shape})"
                          for s in gone[:5])  # fmt: skip
        assert not gone, f"{len(gone)} specs {name} in the record, e.g. {shown}; rerun {REFRESH}"


def test_no_candidate_overflows_shared_memory_or_spills_on_any_architecture(recorded):
    _, found = recorded
    bad = [f"{r.spec.arch} {r.spec.kernel} {r.spec.dtype} {r.spec.config} ({r.spec.shape}): "
           f"{configcheck.why(r)}" for r in found.results if not r.fits]  # fmt: skip
    assert not bad, "\n".join(bad)


def test_a_sample_of_the_record_compiles_as_recorded(recorded):
    """Per architecture and kernel function, the recorded kernel with the most registers
    and the one with the most shared memory, compiled again: the same figures."""
    require_bundled_ptxas()
    _, found = recorded
    picked = fitrecord.sample(found.results)
    assert {r.spec.arch for r in picked} == set(arch.ARCHS)
    compiled = configcheck.check_specs([r.spec for r in picked])

    def figures(r):
        return (r.registers, r.spill_bytes, r.shared_bytes)

    differ = [
        f"{r.spec.arch} {r.spec.kernel} {r.spec.config} ({r.spec.shape}): recorded "
        f"{figures(r)}, compiled {figures(c)} {c.error}"
        for r, c in zip(picked, compiled, strict=True)
        if figures(r) != figures(c)
    ]
    assert not differ, "\n".join(differ) + f"\nrerun {REFRESH}"


@pytest.mark.parametrize(
    ("synthesizer", "module"), [("toolkit", "elementwise"), ("authors", "authors_synth")]
)
def test_a_synthetic_recipe_checks_its_synthesizer_kernels(synthesizer, module):
    """The recipe check compiles the kernels the recipe's synthesizer runs (it once looked
    for a synthesizer named "elementwise", which no recipe has, and checked none)."""
    from altgrad_triton.config import recipe as recipes
    from altgrad_triton.tune import jobs

    r = recipes.load(ROOT / "recipes/wt2/alt-rb5.toml", [f"synthetic.synthesizer='{synthesizer}'"])
    specs = configcheck.recipe_specs(jobs.shapes_from_recipe(r), [torch.bfloat16], "sm_86")
    assert {s.module for s in specs if s.module in ("elementwise", "authors_synth")} == {module}
    assert {s.arch for s in specs} == {"sm_86"}
