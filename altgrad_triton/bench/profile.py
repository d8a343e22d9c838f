"""Where one training segment's time goes: ``torch.profiler`` over one segment of a recipe.

The next kernel work should aim where the time is, not where it is guessed to be. This
trains a recipe on random tokens (``TrainSlice``, the end-to-end rows' setup), lets a few
segments compile and autotune, then records one segment with the profiler and returns the
top operators and kernels by their own time on the device (on a CPU: by their own CPU time,
so the command and its test run anywhere). A synchronisation in the middle of a segment
shows up here too, as ``cudaStreamSynchronize`` / ``aten::item`` / ``aten::_local_scalar_dense``
rows.

Below the operator table, the share of the segment spent in the named parts the model and
the synthetic-gradient boundary mark with ``record_function`` (the LM head, the
synthesizer's predictions and its fit): the parts issue #26 moved onto kernels.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .e2e import TrainSlice
from .measure import Env, free_memory

PARTS = ("lm_head", "synthesizer")
"""Prefixes of the ``record_function`` ranges whose share of the segment is reported."""

WARM_SEGMENTS = 3
"""Segments trained before the profiled one: compilation, autotuning, allocator warm-up."""


def profile_segment(
    env: Env,
    recipe_path: str | Path,
    overrides: Sequence[str],
    backend: str,
    dtype: str,
    mode: str = "synthetic",
    rows: int = 15,
) -> str:
    """The profiler's table of one training segment of ``recipe_path`` (top ``rows``)."""
    with tempfile.TemporaryDirectory(prefix="altgrad-profile-") as tmp:
        s = TrainSlice(env, Path(recipe_path), overrides, backend, dtype, Path(tmp), 4, mode)
        try:
            s.run(WARM_SEGMENTS)
            activities = [ProfilerActivity.CPU]
            if env.device.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            with profile(activities=activities) as prof, record_function("segment"):
                s.run(1)
            averages = prof.key_averages()
            sort = "self_device_time_total" if env.device.type == "cuda" else "self_cpu_time_total"
            table = averages.table(sort_by=sort, row_limit=rows, max_name_column_width=60)
            return table + "\n" + part_shares(averages)
        finally:
            s.close()
            free_memory(env)


def part_shares(averages) -> str:
    """Lines giving each marked part's time and share of the profiled segment.

    Host time: wall time of the Python thread inside the range against the "segment"
    range's. Device time: kernel time the profiler attributes to the range against all
    kernel time in the segment; "-" where it attributes none (no GPU, or a profiler that
    keeps annotations off the device timeline). Work autograd runs later, outside a range
    (the backward of what a range built), is not counted in it.
    """
    by_key = {e.key: e for e in averages}
    segment = by_key.get("segment")
    host_total = segment.cpu_time_total if segment else 0.0
    device_total = sum(getattr(e, "self_device_time_total", 0.0) for e in averages)
    lines = ["share of the segment (host: time inside the range; device: kernel time in it):"]
    for key in sorted(k for k in by_key if k.startswith(PARTS)):
        e = by_key[key]
        host = f"{e.cpu_time_total / 1e3:.3f} ms ({_percent(e.cpu_time_total, host_total)})"
        dev_time = getattr(e, "device_time_total", 0.0)
        dev = (
            "-"
            if not dev_time
            else (f"{dev_time / 1e3:.3f} ms ({_percent(dev_time, device_total)})")
        )
        lines.append(f"  {key:<40} host {host:<22} device {dev}  x{e.count}")
    if len(lines) == 1:
        lines.append("  (no marked part ran in this segment)")
    return "\n".join(lines) + "\n"


def _percent(part: float, total: float) -> str:
    return f"{100 * part / total:.1f}%" if total > 0 else "-"


def profile_title(recipe_path: str | Path, backend: str, dtype: str, mode: str) -> str:
    """The heading printed above a profile table."""
    where = "GPU" if torch.cuda.is_available() else "CPU (reference path, tiny shapes)"
    return (
        f"one training segment of {Path(recipe_path).name} ({mode} mode, backend {backend}, "
        f"{dtype}, random tokens) on the {where}: top operators by self time"
    )
