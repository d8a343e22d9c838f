"""Compile a sweep's kernels on the cores this process may use before timing them.

Triton compiles one kernel at a time, holding the GIL (two threads compile no faster than
one here), so a cold ``altgrad-tune`` used to spend most of its time compiling on one core:
98 kernels for the LSTM recipe's quick sweep, at about 0.4 CPU-s each (0.39 s measured
for an sm_90 LSTM kernel with Triton 3.6; scripts/gpu-check.sh says where and when).
Instead it first *records* every kernel the sweep will compile, then compiles them on a
process pool into Triton's on-disk cache; the sweep's launches then load them from there.

Recording runs each candidate's launch once with ``JITFunction._do_compile`` replaced by a
recorder: it keeps exactly what the JIT would hand to ``triton.compile`` (signature,
constexprs, attrs, parsed options, target) and launches nothing. A worker rebuilds the
``ASTSource`` from that and calls ``triton.compile``, which files the kernel under the key
the JIT will look up. A Triton whose JIT has no such ``_do_compile`` records nothing, and the
sweep compiles as it always did; a kernel the warm-up missed only costs its compile later.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from ..run.winners import kernel_tuning
from .configcheck import jit_function
from .jobs import Job
from .sweeping import job_candidates, probe_key


@dataclass(frozen=True)
class KernelBuild:
    """One kernel as the JIT would compile it (picklable: a worker compiles it)."""

    module: str  # the kernel function's module
    name: str  # its name there (a @triton.jit function, maybe under heuristics/autotune)
    signature: tuple  # (name, type) items
    constexprs: tuple  # (path, value) items
    attrs: tuple  # (path, attributes) items
    options: tuple  # the parsed backend options' (field, value) items
    target: tuple  # (backend, arch, warp size)


@contextlib.contextmanager
def recording(builds: list[KernelBuild]) -> Iterator[None]:
    """While active, a JIT launch that would compile appends a :class:`KernelBuild` to
    ``builds`` and launches nothing (the launch returns None). A Triton whose JIT has no
    ``_do_compile`` records nothing and compiles as usual."""
    from triton.runtime.jit import JITFunction

    real = getattr(JITFunction, "_do_compile", None)
    if real is None:
        yield
        return

    def record(self, key, signature, device, constexprs, options, attrs, warmup):
        target = self.device_caches[device][2]
        builds.append(
            KernelBuild(
                self.fn.__module__, self.fn.__name__, tuple(signature.items()),
                tuple(constexprs.items()), tuple(attrs.items()), tuple(vars(options).items()),
                (target.backend, target.arch, target.warp_size),
            )
        )  # fmt: skip

    JITFunction._do_compile = record
    try:
        yield
    finally:
        JITFunction._do_compile = real


def record_builds(jobs: Sequence[Job], device: torch.device, *, quick: bool = False) -> list:
    """The distinct kernels that sweeping ``jobs`` on ``device`` would compile: each
    candidate's launch, recorded (nothing runs). A launch that fails records what it got to."""
    configs = kernel_tuning()
    builds: list[KernelBuild] = []
    with recording(builds), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a PDL mode falling back: the sweep warns
        for job in jobs:
            key = job.key if job.key is not None else probe_key(job)
            previous = configs.get_override(job.kernel, key)
            try:
                call = job.make(device)
                for meta in job_candidates(job, quick=quick, arch=device):
                    configs.set_override(job.kernel, key, meta)
                    with contextlib.suppress(Exception):  # the sweep reports it, not this
                        call()
            finally:
                configs.set_override(job.kernel, key, previous)
    return list({repr(b): b for b in builds}.values())


def compile_build(build: KernelBuild) -> tuple[float, str]:
    """Compile ``build`` into Triton's cache: (seconds, "" or the error's first line)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    start = time.perf_counter()
    try:
        fn = jit_function(getattr(importlib.import_module(build.module), build.name))
        src = ASTSource(fn, dict(build.signature), dict(build.constexprs), dict(build.attrs))
        triton.compile(src, target=GPUTarget(*build.target), options=dict(build.options))
    except Exception as e:  # noqa: BLE001 - the sweep compiles it again and reports it
        return time.perf_counter() - start, f"{type(e).__name__}: {str(e).strip()[:200]}"
    return time.perf_counter() - start, ""


def _worker_init() -> None:
    os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU, not the interpreter


def warm_cache(builds: Sequence[KernelBuild], processes: int) -> list[tuple[float, str]]:
    """Compile ``builds`` on ``processes`` spawned workers (no CUDA in them); per build
    (seconds, error)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init) as pool:
        return list(pool.map(compile_build, builds, chunksize=1))


def warm_up(jobs: Sequence[Job], device: torch.device, processes: int, console, *,
            quick: bool = False) -> int:  # fmt: skip
    """Record the sweep's kernels and compile them on ``processes`` workers, saying how
    long it took; returns how many were compiled (0 with one process: the sweep compiles)."""
    if processes <= 1:
        return 0
    start = time.perf_counter()
    builds = record_builds(jobs, device, quick=quick)
    if not builds:
        console.print("warm-up: nothing recorded; kernels compile as they are timed", markup=False)
        return 0
    results = warm_cache(builds, min(processes, len(builds)))
    failed = sum(1 for _, err in results if err)
    cpu = sum(s for s, _ in results)
    console.print(
        f"warm-up: compiled {len(builds)} kernels on {min(processes, len(builds))} processes "
        f"in {time.perf_counter() - start:.1f} s ({cpu:.1f} s of compile time"
        + (f"; {failed} failed, the sweep reports them" if failed else "") + ")",
        markup=False,
    )  # fmt: skip
    return len(builds)
