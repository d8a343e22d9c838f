"""altgrad-tune and altgrad-bench on a CUDA GPU, at small shapes (well under a minute).

Checks that a forced config really reaches the compiled launch (a bad candidate fails, the
good ones are timed with do_bench), that winners stored for this device come back through
``apply_stored_winners``, and that every benchmark family runs its GPU providers.
"""

import argparse
import re

import pytest
import torch
from altgrad_triton.kernels import interpreting, tuning

from altgrad_triton import bench, tune
from altgrad_triton.progress import make_console

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(interpreting(), reason="TRITON_INTERPRET=1: compiled kernels are tested"),
    pytest.mark.usefixtures("no_kernel_overrides"),
]


def test_sweep_store_and_apply_on_this_gpu(tmp_path):
    device = torch.device("cuda", torch.cuda.current_device())
    job = tune.fo_pool_jobs(4, 16, 300, torch.float32)[0]
    job.key = tune.probe_key(job)
    good = tune.job_candidates(job, quick=True)[:2]
    bad = {"BLOCK_H": 24, "CHUNK": 8, "num_warps": 1}  # not a power of two: compile error
    r = tune.sweep(job, [good[0], bad, good[1]], device, tune.gpu_timer(5, 10))
    assert [t.ok for t in r.trials] == [True, False, True], [t.error for t in r.trials]
    assert r.aborted is None and r.winner is not None
    torch.cuda.synchronize()  # the device survived the failing candidate
    here = tune.present_device(device)
    path = tune.save_winners(tune.winners_path(tmp_path), tune.winners_from([r], here))
    assert path.exists()
    assert tune.apply_stored_winners(device, tmp_path) == 1
    assert tuning.get_override("fo_pool_fwd", job.key) == r.winner.meta


def test_bench_families_run_their_gpu_providers(monkeypatch):
    env = bench.Env.detect()
    assert env.gpu
    args = argparse.Namespace(
        qrnn_recipe=str(bench.QRNN_RECIPE), lstm_recipe=str(bench.LSTM_RECIPE),
        e2e_override=bench.CPU_TINY_OVERRIDES, e2e_mode="synthetic",
    )  # fmt: skip
    monkeypatch.setattr(bench.families, "_compile", lambda fn: fn)  # compile time is not under test
    shapes = bench.Shapes(
        fo_pool=[(4, 16, 300)], fo_pool_dtypes=["bfloat16"], compile_all=True,
        state=[("tiny", 4, 500)], units=50, lstm_layer=[(4, 8, 128)], lstm_stack=[(4, 8, 128)],
        lstm_best=[(4, 8, 128)], lstm_modes=["bf16-autocast"], stack_reference=False,
        e2e_models=[("tiny qrnn", args.qrnn_recipe, ["float32"])], e2e_warm=1, e2e_measure=1,
    )  # fmt: skip
    timer = bench.Timer(env, 5, 10)
    env.copy_gbps = bench.copy_bandwidth(env, timer)
    assert env.copy_gbps > 10
    report = bench.Report(env, make_console(wide_tables=True), None, False)
    budget = bench.Budget(None, bench.BENCH_FAMILIES)
    bench.run_families(env, args, shapes, bench.BENCH_FAMILIES, timer, budget, report)
    ours = [r for r in report.rows if r.provider == "triton"]
    assert {r.family for r in ours} == set(bench.BENCH_FAMILIES)
    assert all(r.ms is not None or r.metric is not None for r in ours), [r.note for r in ours]
    assert any(r.provider == "cudnn" and r.ms for r in report.rows)
    assert any(r.provider == "bound" for r in report.rows)


def test_the_dry_run_records_what_each_launch_compiles(capsys):
    """On a GPU the dry run counts the kernels the JIT would build (every kernel of a
    launch, every launch mode), as the warm-up records them; nothing runs."""
    from altgrad_triton.cli import tune as tune_cli

    spec = "fo_pool:B=4,T=16,H=300"
    assert tune_cli.main(["--shapes", spec, "--dry-run", "--quick"]) == 0
    out = capsys.readouterr().out
    recorded = re.search(r"(\d+) kernels to compile on a cold cache \(recorded on this GPU\)", out)
    assert recorded and int(recorded.group(1)) > 0, out
