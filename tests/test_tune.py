"""altgrad-tune on a CPU: the no-GPU error, shapes from recipes, override keys, the sweep
(under the Triton interpreter, with a wall-clock timer), and the winners file."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from altgrad_triton.kernels import interpreting, tuning

from altgrad_triton import kernels, tune
from altgrad_triton.cli import tune as tune_cli
from altgrad_triton.config import recipe as recipes
from altgrad_triton.errors import UserError
from altgrad_triton.run import winners
from tests.helpers import run_command, tiny_corpus, tiny_recipe

REPO = Path(__file__).resolve().parents[1]
WT2 = REPO / "recipes" / "wt2.toml"
WT2_LSTM = REPO / "recipes" / "wt2-lstm.toml"
HERE = tune.DeviceId("NVIDIA H100 80GB HBM3", (9, 0), "3.6.0")


@pytest.fixture(autouse=True)
def _no_overrides():
    tuning.clear_overrides()
    yield
    tuning.clear_overrides()


# ----------------------------------------------------------------------------- no GPU


def test_tune_without_gpu_exits_2_with_one_line():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.tune", str(WT2)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "GPU" in lines[0]
    assert proc.stdout == ""


def test_tune_main_without_gpu_in_process(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tune_cli.main([str(WT2), "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]


def test_dry_run_lists_launches_and_keys_without_gpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    assert tune_cli.main([str(WT2), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for text in (
        "fo_pool_fwd",
        "fo_pool_bwd",
        "sg_loss",
        "elementwise_fwd",
        "elementwise_bwd",
        "('float32', 32768)",
        "('float32', 8192)",
        "('float32', 131072, 64)",
    ):
        assert text in out, text
    # without a GPU the compile count is an estimate, and says so
    assert "configs" in out and "distinct configs to compile" in out


def test_bad_shape_specs_are_one_line_errors(capsys):
    assert tune_cli.main(["--shapes", "fo_pool:B=20,T=200", "--dry-run"]) == 2
    assert "missing ['H']" in capsys.readouterr().err
    assert tune_cli.main(["--shapes", "nope:N=3", "--dry-run"]) == 2
    assert tune_cli.main(["--dry-run"]) == 2
    assert tune_cli.main([str(WT2), "--kernels", "bogus", "--dry-run"]) == 2


def test_dry_run_names_the_architecture_it_counts_candidates_for(capsys, monkeypatch):
    """Without a GPU the candidates are those every supported architecture offers, and the
    caption says so; --arch counts one architecture's (an sm_86 offers fewer LSTM tiles at
    sm_90's stage counts than an sm_90)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["--shapes", "lstm:B=20,T=8,H=1550", "--dry-run"]
    assert tune_cli.main(args) == 0
    assert "candidates for every supported architecture: those each" in capsys.readouterr().out
    counts = {}
    for arch in ("sm_86", "sm_90"):
        assert tune_cli.main([*args, "--arch", arch]) == 0
        out = capsys.readouterr().out
        assert f"candidates for {arch} (--arch)" in out
        counts[arch] = out
    assert counts["sm_86"] != counts["sm_90"]


def test_check_configs_options_are_checked(capsys):
    for argv, text in (
        (["--check-configs", "--arch", "sm_75"], "supported: sm_80, sm_86, sm_89, sm_90"),
        (["--check-configs", str(WT2), "--record", "x"], "--record needs the full check"),
        (["--check-configs", "--arch", "sm_90", "--record", "x"], "--record needs the full"),
        ([str(WT2), "--record", "x"], "--record goes with --check-configs"),
        ([str(WT2), "--arch", "sm_86"], "--arch goes with --check-configs or --dry-run"),
        ([str(WT2), "--dry-run", "--arch", "sm_86,sm_90"], "one --arch at a time"),
    ):
        assert tune_cli.main(argv) == 2, argv
        assert text in capsys.readouterr().err, argv


def test_compiles_use_the_cores_this_process_may_use(monkeypatch):
    """The compile pools (--check-configs, the sweep's warm-up) size themselves by the
    process's affinity mask (a container's or taskset's share), not the machine's cores."""
    from altgrad_triton.tune import configcheck

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert configcheck.usable_cores() == 2
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert configcheck.usable_cores() == 64


# ----------------------------------------------------------------------------- shapes


def test_shapes_from_wt2_recipe():
    s = tune.shapes_from_recipe(recipes.load(WT2))
    assert s.cell == "qrnn"
    assert s.batch == 20 and s.bptt == 200
    assert s.hidden == (1550, 1550, 1550, 400)
    assert s.dtype == torch.float32
    # joined state: layer 1 carries (c 1550, last input 400: window 2), layers 2-3 c 1550,
    # layer 4 c 400 (tied to the 400-dim embedding)
    assert s.state_size == 1550 + 400 + 1550 + 1550 + 400 == 5450
    assert s.state_elements == 20 * 5450
    assert s.synthetic and s.synthesizer == "toolkit" and s.synth_hidden == 50
    bf16 = tune.shapes_from_recipe(recipes.load(WT2, ["run.dtype=bfloat16"]))
    assert bf16.dtype == torch.bfloat16


def test_shapes_from_wt2_lstm_recipe():
    s = tune.shapes_from_recipe(recipes.load(WT2_LSTM))
    assert s.cell == "lstm" and s.hidden == (1150, 1150, 400)
    assert s.state_size == 2 * (1150 + 1150 + 400)  # (h, c) per layer


def test_recipe_jobs_probe_the_launchers_keys():
    jobs = tune.unique_jobs(tune.recipe_jobs(tune.shapes_from_recipe(recipes.load(WT2))))
    got = [(j.kernel, j.key) for j in jobs]
    train_and_eval = [
        ("fo_pool_fwd", 32768),  # B*H = 31,000
        ("fo_pool_bwd", 32768),
        ("fo_pool_fwd", 8192),  # 8,000
        ("fo_pool_bwd", 8192),
    ]
    evaluation = [  # validation (B=10) and test (B=1) forwards: keys of their own
        ("fo_pool_fwd", 16384),
        ("fo_pool_fwd", 4096),
        ("fo_pool_fwd", 2048),
        ("fo_pool_fwd", 512),
    ]
    synth = [
        ("elementwise_fwd", ("float32", 131072, 64)),  # N = 109,000; U=50 padded to 64
        ("elementwise_bwd", ("float32", 131072, 64)),
        ("sg_loss", ("float32", 131072)),
    ]
    assert got == [
        *[(k, ("float32", n)) for k, n in train_and_eval],
        *synth,
        *[(k, ("float32", n)) for k, n in evaluation],
        # the other run.dtype, so a bf16 run finds its keys tuned too
        *[(k, ("bfloat16", n)) for k, n in train_and_eval + evaluation],
    ]
    lstm = tune.unique_jobs(
        tune.recipe_jobs(
            tune.shapes_from_recipe(recipes.load(WT2_LSTM, ["run.dtype=bfloat16"])), quick=True
        )
    )
    assert [(j.kernel, j.key) for j in lstm][:4] == [  # dtype, B bucket, H rounded up to 128
        ("lstm_fwd", ("bfloat16", 32, 1152)), ("lstm_bwd", ("bfloat16", 32, 1152)),
        ("lstm_fwd", ("bfloat16", 32, 512)), ("lstm_bwd", ("bfloat16", 32, 512)),
    ]  # fmt: skip
    assert lstm[0].shape == "B=20 T=64 H=1150"  # --quick: LSTM timed over 64 steps


@pytest.mark.parametrize("path", [WT2, WT2_LSTM], ids=["qrnn", "lstm"])
def test_recipe_jobs_cover_training_validation_and_test(path, monkeypatch):
    """Both run.dtype values; training's forward (saving for the backward) and backward at
    the training batch; validation's and test's forwards at their batches, saving nothing
    (SAVE_ACT=False / no checkpoints): the kernels evaluation launches."""
    shapes = tune.shapes_from_recipe(recipes.load(path))
    cell = "lstm" if shapes.cell == "lstm" else "fo_pool"
    module = kernels.lstm if cell == "lstm" else kernels.fo_pooling
    launcher = "lstm_segment_forward" if cell == "lstm" else "fo_pool_forward"
    flag = "save_for_backward" if cell == "lstm" else "save"
    saved = []
    monkeypatch.setattr(module, launcher, lambda *a, **kw: saved.append(kw[flag]))
    jobs = tune.recipe_jobs(shapes, quick=True)
    seen = set()
    for j in jobs:
        if j.family == cell:
            forward = j.kernel.endswith("_fwd")
            if forward:  # the backward launcher is not stubbed: it would run
                j.make(torch.device("meta"))()
            seen.add(
                (j.kernel, tune.dtype_name(j.dtype), j.batch, saved.pop() if forward else True)
            )
    assert shapes.eval_batches == (10, 1)
    want = set()
    for dtype in ("float32", "bfloat16"):
        want |= {(f"{cell}_fwd", dtype, 20, True), (f"{cell}_bwd", dtype, 20, True)}
        want |= {(f"{cell}_fwd", dtype, b, False) for b in shapes.eval_batches}
    assert seen == want
    assert jobs[0].dtype == shapes.dtype  # the recipe's own dtype first


def test_each_synthesizer_tunes_its_own_kernels():
    """The toolkit's synthesizer runs the element-wise kernels; the authors' runs its scan
    (kernels.authors_scan) over the batch's joined recurrent state (synthetic.join =
    "recurrent": no window-2 QRNN's carried input), unless its layer steps element by
    element (in PyTorch)."""
    scan = {"authors_scan_fwd", "authors_scan_bwd"}
    elementwise = {"elementwise_fwd", "elementwise_bwd"}
    toolkit = {j.kernel for j in tune.recipe_jobs(tune.shapes_from_recipe(recipes.load(WT2)))}
    assert elementwise <= toolkit and not toolkit & scan
    for spelling in ("synthetic.synthesizer=authors", "synthetic.preset=authors"):
        shapes = tune.shapes_from_recipe(recipes.load(WT2, [spelling]))
        assert shapes.state_size == 1550 + 1550 + 1550 + 400  # the cells' c, not the input
        jobs = tune.unique_jobs(tune.recipe_jobs(shapes))
        kernels = {j.kernel for j in jobs}
        assert "sg_loss" in kernels and scan <= kernels and not kernels & elementwise
        assert {j.key for j in jobs if j.family == "authors_scan"} == {
            ("float32", tuning.size_bucket(20 * 5050 * 50))  # N*U
        }
    element = recipes.load(
        WT2, ["synthetic.synthesizer=authors", "synthetic.authors.sequence=element"]
    )
    kernels = {j.kernel for j in tune.recipe_jobs(tune.shapes_from_recipe(element))}
    assert "sg_loss" in kernels and not kernels & (scan | elementwise)


@pytest.mark.skipif(not interpreting(), reason="trains on the CPU through the interpreter")
@pytest.mark.parametrize("synthesizer", ["authors", "toolkit"])
def test_the_recipe_jobs_cover_every_launch_a_triton_run_tunes(tmp_path, monkeypatch, synthesizer):
    """A real training run on the Triton backend (the interpreter, a tiny QRNN recipe):
    every (kernel, key) its launchers ask the tuning registry for, training, the
    synthesizer's fit, validation and test, is one altgrad-tune's recipe jobs time, so
    that no launch of a tuned run falls back to a guess or to Triton's autotuner."""
    from altgrad_triton.run.train import Trainer
    from altgrad_triton.run.winners import kernel_tuning

    recipe = tiny_recipe(
        tiny_corpus(tmp_path / "data", n_train=120),
        tmp_path / "runs",
        run={"epochs": 1, "backend": "triton", "max_batches": 2},
        model={"cell": "qrnn", "layers": 2},
        synthetic={"enabled": True, "synthesizer": synthesizer},
    )
    registry = kernel_tuning()
    asked, real_pick = set(), registry.pick

    def spy(kernel, key, heuristic):
        asked.add((kernel, tuple(key)))
        return real_pick(kernel, key, heuristic)

    monkeypatch.setattr(registry, "pick", spy)
    Trainer(recipe, tmp_path / "runs" / "tiny").fit()
    monkeypatch.setattr(registry, "pick", real_pick)
    shapes = tune.shapes_from_recipe(recipe, tune.recipe_vocabulary(recipe))
    jobs = tune.unique_jobs(tune.recipe_jobs(shapes))
    kernel = "authors_scan_fwd" if synthesizer == "authors" else "elementwise_fwd"
    assert {"fo_pool_fwd", "fo_pool_bwd", "sg_loss", "linear_ce", kernel} <= {k for k, _ in asked}
    assert asked <= {(j.kernel, j.key) for j in jobs}


def test_the_head_is_tuned_when_the_corpus_is_here_and_never_downloaded(
    tmp_path, capsys, monkeypatch
):
    """The LM head's key is the vocabulary: read from a corpus on this machine, never
    downloaded (a GPU machine may have no network); a missing one is a note, not an error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the dry run's estimate
    here = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs")
    assert tune.recipe_vocabulary(here) == 18
    heads = [
        j for j in tune.recipe_jobs(tune.shapes_from_recipe(here, 18)) if j.family == "linear_ce"
    ]
    assert [(j.shape, tune.dtype_name(j.dtype)) for j in heads] == [
        ("N=32 V=18", "float32"),  # a chunk: the whole segment, B x T = 4 x 8
        ("N=32 V=18", "bfloat16"),
    ]
    missing = recipes.load(WT2, [f"data.cache_dir={json.dumps(str(tmp_path / 'empty'))}"])
    with pytest.raises(UserError, match="downloading is off"):
        tune.recipe_vocabulary(missing)
    code, out, _ = run_command(tune_cli.main, capsys, str(WT2), "--dry-run", "--quick",
                               f"data.cache_dir={json.dumps(str(tmp_path / 'empty'))}")  # fmt: skip
    assert code == 0 and "note: the LM head (linear_ce) is not tuned" in out
    assert "linear_ce" not in out.split("dry run")[1]


def test_shape_specs():
    jobs = tune.parse_shape_spec("fo_pool:B=2,T=3,H=5,dtype=bfloat16", torch.float32)
    assert [j.kernel for j in jobs] == ["fo_pool_fwd", "fo_pool_bwd"]
    assert all(j.dtype == torch.bfloat16 for j in jobs)
    only = tune.parse_shape_spec("elementwise_bwd:N=7", torch.float16)
    assert [(j.kernel, j.dtype, j.shape) for j in only] == [
        ("elementwise_bwd", torch.float16, "N=7 U=50")
    ]
    head = tune.parse_shape_spec("linear_ce:N=8,V=100,dtype=bfloat16", torch.float32)
    assert [(j.kernel, j.shape) for j in head] == [("linear_ce", "N=8 V=100")]
    assert tune.probe_key(head[0]) == ("bfloat16", 128)  # the key its launcher asks for
    with pytest.raises(UserError, match="unknown"):
        tune.parse_shape_spec("sg_loss:N=3,Q=4", torch.float32)
    with pytest.raises(UserError, match="integers"):
        tune.parse_shape_spec("sg_loss:N=x", torch.float32)


def test_quick_candidates():
    lstm = tune.lstm_jobs(20, 4, 32, torch.float32)[0]
    quick = tune.job_candidates(lstm, quick=True)
    assert quick and len(quick) <= tune.QUICK_CANDIDATES
    assert {m["BLOCK_B"] for m in quick} == {32}  # the smallest block covering B=20
    fo = tune.fo_pool_jobs(2, 3, 16, torch.float32)[0]
    full = tune.job_candidates(fo, arch="sm_89")
    assert full == tuning.candidates("fo_pool_fwd", "sm_89")
    assert tune.job_candidates(fo) == tuning.candidates("fo_pool_fwd")  # no GPU: arch.ANY
    quick = tune.job_candidates(fo, quick=True, arch="sm_89")
    assert len(quick) == min(len(full), tune.QUICK_CANDIDATES)
    assert quick[0] == full[0] and quick[-1] == full[-1]
    for job in (tune.fo_pool_jobs(2, 3, 16, torch.float32, train=False)[0],
                tune.lstm_jobs(1, 4, 32, torch.float32, train=False)[0]):  # fmt: skip
        every = tune.job_candidates(job, arch="sm_89")
        assert job.evaluation and len(every) > tune.QUICK_EVAL_CANDIDATES
        quick = tune.job_candidates(job, quick=True, arch="sm_89")
        assert len(quick) == tune.QUICK_EVAL_CANDIDATES


# ----------------------------------------------------------------------------- sweeping


def _wall_timer(fn):
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), min(times), max(times)


@pytest.mark.skipif(not interpreting(), reason="runs the kernels through the interpreter")
def test_sweep_forces_each_candidate_and_survives_a_failing_one():
    job = tune.fo_pool_jobs(2, 3, 16, torch.float32)[0]
    job.key = tune.probe_key(job)
    assert job.key == ("float32", 32)
    before = {"BLOCK_H": 64, "CHUNK": 8, "num_warps": 1, "num_stages": 1}
    tuning.set_override("fo_pool_fwd", job.key, before)
    good = [
        {"BLOCK_H": 16, "CHUNK": 4, "num_warps": 1, "num_stages": 1},
        {"BLOCK_H": 8, "CHUNK": 4, "num_warps": 1, "num_stages": 1},
    ]
    # tl.arange needs a power of two
    bad = {"BLOCK_H": 24, "CHUNK": 4, "num_warps": 1, "num_stages": 1}
    seen = []
    result = tune.sweep(
        job,
        [good[0], bad, good[1]],
        torch.device("cpu"),
        _wall_timer,
        progress=lambda j, t: seen.append(t.meta),
    )
    assert [t.meta for t in result.trials] == [good[0], bad, good[1]] == seen
    assert [t.ok for t in result.trials] == [True, False, True]
    assert result.trials[1].error  # the compile error, one line
    assert "\n" not in result.trials[1].error
    assert result.winner.meta in good
    assert result.aborted is None
    # the override in place before the sweep is back
    assert tuning.get_override("fo_pool_fwd", job.key) == before
    winners = tune.winners_from([result], HERE)
    assert len(winners) == 1 and winners[0].meta == result.winner.meta
    assert winners[0].candidates == 3 and winners[0].key == ("float32", 32)


@pytest.mark.skipif(not interpreting(), reason="runs the kernels through the interpreter")
def test_sweep_of_every_family_runs_under_the_interpreter():
    jobs = (
        tune.fo_pool_jobs(2, 2, 8, torch.float32)
        + tune.lstm_jobs(2, 2, 16, torch.float32)
        + tune.sg_loss_jobs(40)
        + tune.elementwise_jobs(5, 3)
        + tune.authors_scan_jobs(37, 3)
    )
    for job in tune.unique_jobs(jobs):
        metas = tune.job_candidates(job, quick=True)[:1]
        r = tune.sweep(job, metas, torch.device("cpu"), _wall_timer)
        assert r.winner is not None, (job.label, [t.error for t in r.trials])


# ----------------------------------------------------------------------------- winners file


def _entry(**over):
    meta = tuning.candidates("fo_pool_fwd", "sm_90")[0]  # HERE is an sm_90
    d = {
        "device": HERE.name,
        "capability": list(HERE.capability),
        "triton": HERE.triton,
        "kernel": "fo_pool_fwd",
        "key": ["bfloat16", 32768],
        "meta": meta,
    }
    d.update(over)
    return d


def test_winners_round_trip_and_merge(tmp_path):
    path = tmp_path / "winners.json"
    a = tune.Winner(
        HERE.name,
        HERE.capability,
        HERE.triton,
        "fo_pool_fwd",
        ("float32", 32768),
        {"BLOCK": 128, "num_warps": 1, "num_stages": 1},
        median_ms=0.5,
        shape="B=20 T=200 H=1550",
    )
    b = tune.Winner(
        HERE.name,
        HERE.capability,
        HERE.triton,
        "elementwise_fwd",
        ("float32", 131072, 64),
        {"BLOCK_N": 32, "num_warps": 4, "num_stages": 1},
    )
    tune.save_winners(path, [a, b])
    assert tune.load_winners(path) == sorted([a, b], key=lambda w: str(w.identity()))
    data = json.loads(path.read_text())
    assert data["format"] == tune.FORMAT
    e = next(e for e in data["entries"] if e["kernel"] == "fo_pool_fwd")
    assert e["key"] == ["float32", 32768] and e["dtype"] == "float32" and e["bucket"] == 32768
    assert e["capability"] == [9, 0] and e["triton"] == "3.6.0"
    # saving again replaces the same identity and keeps the rest
    a2 = tune.Winner(**{**a.__dict__, "meta": {"BLOCK": 256, "num_warps": 2, "num_stages": 1}})
    other = tune.Winner(**{**a.__dict__, "device": "NVIDIA A100-SXM4-80GB", "capability": (8, 0)})
    tune.save_winners(path, [a2, other])
    got = {w.identity(): w for w in tune.load_winners(path)}
    assert len(got) == 3
    assert got[a.identity()].meta == a2.meta
    assert got[b.identity()] == b and got[other.identity()] == other


def test_apply_stored_winners_only_for_this_device_and_triton(tmp_path, monkeypatch):
    cands = tuning.candidates("fo_pool_fwd", "sm_90")  # HERE's
    entries = [
        _entry(),  # applies
        _entry(key=["float32", 8192], meta=cands[1]),  # applies
        _entry(key=["float16", 1], device="NVIDIA A100-SXM4-80GB"),  # other GPU
        _entry(key=["float16", 2], capability=[8, 0]),  # other capability
        _entry(key=["float16", 4], triton="3.5.0"),  # other Triton
        _entry(key=["float16", 8], kernel="no_such_kernel"),  # not registered
        _entry(key=["float16", 16], meta={"BLOCK": 3, "num_warps": 1}),  # not a candidate
    ]
    (tmp_path / "winners.json").write_text(json.dumps({"format": tune.FORMAT, "entries": entries}))
    monkeypatch.setattr(winners, "present_device", lambda device=None: HERE)
    with pytest.warns(UserWarning, match="1 stored winner.*no longer candidates"):
        assert tune.apply_stored_winners(torch.device("cuda"), tmp_path) == 2
    assert tuning.get_override("fo_pool_fwd", ("bfloat16", 32768)) == cands[0]
    assert tuning.get_override("fo_pool_fwd", ("float32", 8192)) == cands[1]
    for n in (1, 2, 4, 8, 16):
        assert tuning.get_override("fo_pool_fwd", ("float16", n)) is None
    # the same file seen from another device or Triton version applies nothing
    tuning.clear_overrides()
    for there in (
        tune.DeviceId(HERE.name, (9, 0), "3.9.0"),
        tune.DeviceId("NVIDIA H200", (9, 0), HERE.triton),
    ):
        monkeypatch.setattr(winners, "present_device", lambda device=None, t=there: t)
        assert tune.apply_stored_winners("cuda", tmp_path) == 0
    assert tuning.get_override("fo_pool_fwd", ("bfloat16", 32768)) is None


def test_a_stored_winner_that_does_not_fit_this_gpu_is_ignored(tmp_path, monkeypatch):
    """A winner stored on one GPU model is applied only on the same name and capability;
    its config must also be a candidate for that capability's limits: an LSTM tile sized
    for 227 KB of shared memory (sm_90: 3 stages, 147,456 B) is not one on an sm_86 (99 KB)."""
    big = {"BLOCK_B": 16, "BLOCK_H": 32, "BLOCK_K": 128, "SPLIT_K": 2, "num_warps": 8,
           "num_stages": 3, "LAUNCH": 0}  # fmt: skip
    assert big in tuning.candidates("lstm_fwd", "sm_90")
    assert big not in tuning.candidates("lstm_fwd", "sm_86")
    for cap, applied in (((9, 0), 1), ((8, 6), 0)):
        here = tune.DeviceId("NVIDIA A-something", cap, HERE.triton)
        entry = _entry(device=here.name, capability=list(cap), kernel="lstm_fwd",
                       key=["float32", 32, 1664], meta=big)  # fmt: skip
        (tmp_path / "winners.json").write_text(
            json.dumps({"format": tune.FORMAT, "entries": [entry]})
        )
        monkeypatch.setattr(winners, "present_device", lambda device=None, h=here: h)
        if applied:
            assert tune.apply_stored_winners("cuda", tmp_path) == 1
        else:
            with pytest.warns(UserWarning, match="no longer candidates on sm_86"):
                assert tune.apply_stored_winners("cuda", tmp_path) == 0
        tuning.clear_overrides()


def test_apply_stored_winners_without_cuda_or_file_or_with_garbage(tmp_path, monkeypatch):
    if not torch.cuda.is_available():
        (tmp_path / "winners.json").write_text(
            json.dumps({"format": tune.FORMAT, "entries": [_entry()]})
        )
        assert tune.apply_stored_winners(torch.device("cuda"), tmp_path) == 0
    assert tune.apply_stored_winners(torch.device("cpu"), tmp_path) == 0
    monkeypatch.setattr(winners, "present_device", lambda device=None: HERE)
    assert tune.apply_stored_winners("cuda", tmp_path / "empty") == 0  # no file
    (tmp_path / "winners.json").write_text("{not json")
    with pytest.warns(UserWarning, match="not valid JSON"):
        assert tune.apply_stored_winners("cuda", tmp_path) == 0
    (tmp_path / "winners.json").write_text(json.dumps({"format": "v0", "entries": []}))
    with pytest.warns(UserWarning, match="format"):
        assert tune.apply_stored_winners("cuda", tmp_path) == 0


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(tune.CACHE_ENV, raising=False)
    assert tune.cache_dir() == tmp_path / "home" / ".cache" / "altgrad-triton" / "tune"
    monkeypatch.setenv(tune.CACHE_ENV, str(tmp_path / "env"))
    assert tune.cache_dir() == tmp_path / "env"
    assert tune.cache_dir(tmp_path / "opt") == tmp_path / "opt"
    assert tune.winners_path(tmp_path / "opt") == tmp_path / "opt" / "winners.json"


@pytest.mark.skipif(not interpreting(), reason="runs the kernels through the interpreter")
def test_tune_all_prints_tables_and_stores_the_winners(tmp_path):
    from altgrad_triton.progress import make_console

    jobs = tune.unique_jobs(
        tune.parse_shape_spec("sg_loss:N=40", torch.float32)
        + tune.parse_shape_spec("fo_pool_fwd:B=2,T=2,H=8", torch.float32)
    )
    console = make_console(wide_tables=True)
    with console.capture() as cap:
        results, winners, path = tune.tune_all(
            jobs, torch.device("cpu"), HERE, _wall_timer, console, quick=True,
            path=tune.winners_path(tmp_path),
        )  # fmt: skip
    out = cap.get()
    assert "winner" in out and "sg_loss" in out and "fo_pool_fwd" in out
    assert path == tmp_path / "winners.json"
    stored = tune.load_winners(path)
    assert {(w.kernel, w.key) for w in stored} == {
        ("sg_loss", ("float32", 64)),
        ("fo_pool_fwd", ("float32", 16)),
    }
    assert all(w.device == HERE.name and w.triton == HERE.triton for w in stored)
    assert len(results) == 2 and len(winners) == 2


def test_the_quick_help_states_the_quick_limits():
    from altgrad_triton.tune.jobs import QUICK_LSTM_STEPS
    from altgrad_triton.tune.sweeping import QUICK_CANDIDATES, QUICK_EVAL_CANDIDATES

    text = " ".join(tune_cli.parser().format_help().split())
    assert (
        f"at most {QUICK_CANDIDATES} candidates per kernel ({QUICK_EVAL_CANDIDATES} per "
        f"validation/test forward), LSTM timed over <= {QUICK_LSTM_STEPS} steps" in text
    )
