"""The sweep (``tune/sweeping.py``) on a CPU, under the Triton interpreter with a wall-clock
timer: candidates, a failing one survived, every family, and the winners stored."""

import time

import pytest
import torch
from altgrad_triton.kernels import interpreting, tuning

from altgrad_triton import tune

pytestmark = pytest.mark.usefixtures("no_kernel_overrides")

HERE = tune.DeviceId("NVIDIA H100 80GB HBM3", (9, 0), "3.6.0")


def _wall_timer(fn):
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), min(times), max(times)


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
