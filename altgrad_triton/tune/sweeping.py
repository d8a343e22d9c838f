"""Sweeping: probe each launch's override key, choose its candidate configs, time them on
the GPU and keep the fastest as winners."""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import one_line
from ..run.winners import DeviceId, Winner, kernel_tuning, save_winners
from .jobs import Job
from .results import SweepResult, Timing, Trial
from .tables import format_meta, result_table, winners_table

QUICK_CANDIDATES = 6
"""At most this many candidates per kernel under ``--quick`` (spread over the list)."""
QUICK_EVAL_CANDIDATES = 2
"""... and per validation/test forward, a small share of a run's time."""


# ----------------------------------------------------------------------------- probing


class _Probed(Exception):
    """Raised by the wrapped ``pick`` to stop a probed launch before it runs."""


@contextlib.contextmanager
def _recording_pick(seen: list[tuple[str, tuple]]) -> Iterator[None]:
    configs = kernel_tuning()
    real = configs.pick

    def spy(kernel, key, heuristic):
        seen.append((kernel, tuple(key)))
        raise _Probed

    configs.pick = spy
    try:
        yield
    finally:
        configs.pick = real


def probe_key(job: Job) -> tuple:
    """The override key ``job``'s launcher asks ``tuning.pick`` for, learnt by calling it on
    ``meta`` tensors with ``pick`` replaced by a recorder that stops the launch (nothing is
    allocated for real, nothing compiles, no GPU needed). Raises RuntimeError when the
    launcher never asks for ``job.kernel`` (then it cannot be tuned through overrides)."""
    seen: list[tuple[str, tuple]] = []
    with _recording_pick(seen):
        call = job.make(torch.device("meta"))
        with contextlib.suppress(_Probed):
            call()
    keys = [key for kernel, key in seen if kernel == job.kernel]
    if not keys:
        raise RuntimeError(
            f"{job.kernel}: its launcher did not consult the tuning registry "
            f"(asked for {seen or 'nothing'}); cannot force its configs"
        )
    return keys[0]


def unique_jobs(jobs: Sequence[Job]) -> list[Job]:
    """Probe every job's key and keep the first job of each (kernel, key)."""
    out, seen = [], set()
    for job in jobs:
        if job.key is None:
            job.key = probe_key(job)
        ident = (job.kernel, job.key)
        if ident not in seen:
            seen.add(ident)
            out.append(job)
    return out


# ----------------------------------------------------------------------------- candidates


def _spread(items: list, k: int) -> list:
    """``k`` items spread evenly over ``items`` (first and last included)."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[0]]
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def job_candidates(job: Job, *, quick: bool = False, arch: Any = None) -> list[dict[str, int]]:
    """The kernel's registered candidates for ``arch`` (a device or an architecture such as
    "sm_86"; None: the present GPU, see ``tuning.candidates``); under ``quick`` at most
    ``QUICK_CANDIDATES`` of them (``QUICK_EVAL_CANDIDATES`` for an evaluation launch), and
    for configs with a BLOCK_B (the LSTM) only the smallest block covering B (what the
    kernel's own autotuner keeps)."""
    metas = kernel_tuning().candidates(job.kernel, arch)
    if not quick:
        return metas
    if job.batch is not None and metas and all("BLOCK_B" in m for m in metas):
        sizes = sorted({m["BLOCK_B"] for m in metas})
        want = next((s for s in sizes if s >= job.batch), sizes[-1])
        metas = [m for m in metas if m["BLOCK_B"] == want]
    return _spread(metas, QUICK_EVAL_CANDIDATES if job.evaluation else QUICK_CANDIDATES)


# ----------------------------------------------------------------------------- sweeping


def gpu_timer(warmup_ms: float, rep_ms: float) -> Callable[[Callable[[], Any]], Timing]:
    """``triton.testing.do_bench`` quantiles (median, p20, p80) in ms."""
    from triton.testing import do_bench

    def timer(fn: Callable[[], Any]) -> Timing:
        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return float(med), float(p20), float(p80)

    return timer


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sweep(
    job: Job,
    metas: Sequence[dict[str, int]],
    device: torch.device,
    timer: Callable[[Callable[[], Any]], Timing],
    progress: Callable[[Job, Trial], None] | None = None,
) -> SweepResult:
    """Time ``job`` with each config forced through ``set_override`` on its key.

    A config that fails (compile error, out of resources, launch error) is recorded and
    skipped. If the device itself is broken afterwards (a sticky CUDA error), the sweep
    stops there (``aborted``). The override that was in place before is restored.
    """
    configs = kernel_tuning()
    key = job.key if job.key is not None else probe_key(job)
    job.key = key
    result = SweepResult(job)
    previous = configs.get_override(job.kernel, key)
    try:
        call = job.make(device)
        for meta in metas:
            trial = Trial(dict(meta))
            try:
                configs.set_override(job.kernel, key, meta)
                call()  # compile + first launch: errors surface here
                _synchronize(device)
                trial.timing = timer(call)
            except Exception as e:  # noqa: BLE001 - a failing candidate is data, not a crash
                trial.error = one_line(e)
                try:
                    _synchronize(device)
                except Exception as sticky:  # noqa: BLE001
                    result.trials.append(trial)
                    result.aborted = (
                        f"device unusable after {format_meta(meta)}: {one_line(sticky)}"
                    )
                    break
            result.trials.append(trial)
            if progress is not None:
                progress(job, trial)
    finally:
        configs.set_override(job.kernel, key, previous)
    return result


def winners_from(results: Sequence[SweepResult], here: DeviceId) -> list[Winner]:
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    out = []
    for r in results:
        best = r.winner
        if best is None:
            continue
        med, p20, p80 = best.timing
        out.append(
            Winner(
                device=here.name,
                capability=here.capability,
                triton=here.triton,
                kernel=r.job.kernel,
                key=tuple(r.job.key),
                meta=dict(best.meta),
                median_ms=round(med, 6),
                p20_ms=round(p20, 6),
                p80_ms=round(p80, 6),
                shape=r.job.shape,
                candidates=len(r.trials),
                torch=torch.__version__,
                date=now,
            )
        )
    return out


def tune_all(
    jobs: Sequence[Job],
    device: torch.device,
    here: DeviceId,
    timer: Callable[[Callable[[], Any]], Timing],
    console,
    *,
    quick: bool = False,
    path: Path | None = None,
) -> tuple[list[SweepResult], list[Winner], Path | None]:
    """Sweep every job (printing a table each), storing each job's winner at ``path`` as soon
    as it is known (None: do not store), so a sweep stopped by a time limit or Ctrl-C keeps
    what it finished. Stops early if the device is left in an error state."""
    results = []
    saved = None
    started = time.perf_counter()
    for job in jobs:
        metas = job_candidates(job, quick=quick, arch=device)
        t0 = time.perf_counter()
        r = sweep(job, metas, device, timer)
        results.append(r)
        console.print(result_table(r))
        console.print(
            f"  {len(metas)} candidates in {time.perf_counter() - t0:.1f} s", markup=False
        )
        found = winners_from([r], here)
        if found and path is not None:
            saved = save_winners(path, found)
        if r.aborted:
            console.print("stopping: the device is in an error state", markup=False)
            break
    winners = winners_from(results, here)
    console.print(winners_table(results, saved))
    console.print(
        f"tuned {len(winners)}/{len(results)} launches in {time.perf_counter() - started:.1f} s",
        markup=False,
    )
    return results, winners, saved
