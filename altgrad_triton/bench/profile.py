"""Where one training segment's time goes: ``torch.profiler`` over one segment of a recipe.

The next kernel work should aim where the time is, not where it is guessed to be. This
trains a recipe on random tokens (``TrainSlice``, the end-to-end rows' setup), lets a few
segments compile and autotune, then records one segment with the profiler and returns the
top operators and kernels by their own time on the device (on a CPU: by their own CPU time,
so the command and its test run anywhere). A synchronisation in the middle of a segment
shows up here too, as ``cudaStreamSynchronize`` / ``aten::item`` / ``aten::_local_scalar_dense``
rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from .e2e import TrainSlice
from .measure import Env, free_memory

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
            with profile(activities=activities) as prof:
                s.run(1)
            sort = "self_device_time_total" if env.device.type == "cuda" else "self_cpu_time_total"
            return prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=60)
        finally:
            s.close()
            free_memory(env)


def profile_title(recipe_path: str | Path, backend: str, dtype: str, mode: str) -> str:
    """The heading printed above a profile table."""
    where = "GPU" if torch.cuda.is_available() else "CPU (reference path, tiny shapes)"
    return (
        f"one training segment of {Path(recipe_path).name} ({mode} mode, backend {backend}, "
        f"{dtype}, random tokens) on the {where}: top operators by self time"
    )
