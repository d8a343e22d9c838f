"""Rows for runs that ``altgrad-train`` itself made: the main job's throughput through the CLI.

The kernel benchmarks and the end-to-end rows time pieces inside one process; this reads
finished (or capped) run folders that the real command wrote, as a user would have them:
each run's last epoch gives tokens/s, the peak GPU memory and the training loss, against the
first epoch's (does the loss fall?). The first epoch includes compilation and autotuning,
so a slice should train two or more capped epochs and the last one is reported.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..files import read_jsonl
from ..run.folder import RunFolder
from .measure import Row


def slice_row(run_dir: str | Path) -> Row:
    """One run folder as a row: provider = ``run.backend``, metric = last epoch's tokens/s."""
    run_dir, folder = Path(run_dir), RunFolder(run_dir)
    recipe_file, metrics = folder.recipe, folder.metrics
    if not recipe_file.exists() or not metrics.exists():
        raise UserError(f"{run_dir}: not a run folder (needs {folder.RECIPE} and {folder.METRICS})")
    try:
        recipe = tomllib.loads(recipe_file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{recipe_file}: not a readable recipe ({e})") from None
    epochs = read_jsonl(metrics, required=("epoch", "train_loss", "tokens_per_s", "mode"))
    if not epochs:
        raise UserError(f"{metrics}: no finished epoch yet")
    run, model, data = recipe["run"], recipe["model"], recipe["data"]
    first, last = epochs[0], epochs[-1]
    falls = last["train_loss"] < first["train_loss"]
    peak = last.get("peak_mem_gib")
    note = (
        f"epoch {last['epoch']} ({last['mode']}); train loss {first['train_loss']:.3f} -> "
        f"{last['train_loss']:.3f} ({'falls' if falls else 'does NOT fall'})"
        + (f"; peak {peak:.2f} GiB" if peak is not None else "")
    )
    layers = f"{model['layers']}x{model['hidden_size']} {model['cell']}"
    return Row(
        "cli-train",
        f"{run['name']}: {layers}, {data['corpus']}, B={data['batch_size']}",
        run["dtype"],
        "train",
        run["backend"],
        ms=last["seconds"] * 1e3,
        metric=last["tokens_per_s"],
        unit="tokens/s",
        note=note,
    )


def slice_rows(run_dirs: Sequence[str | Path]) -> list[Row]:
    """Rows for ``run_dirs``; ``ratio`` = the triton run's tokens/s over this row's, between
    runs of the same model and dtype (> 1: ours is faster)."""
    rows = [slice_row(d) for d in run_dirs]
    for r in rows:
        model = r.shape.split(": ", 1)[1]
        ours = next(
            (
                o
                for o in rows
                if o.provider == "triton" and o.dtype == r.dtype and o.shape.endswith(model)
            ),
            None,
        )
        if ours is not None and r.metric:
            r.ratio = ours.metric / r.metric
    return rows
