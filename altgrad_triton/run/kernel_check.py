"""A run's kernel guard (``kernels.guard``), made from ``run.backend`` and
``run.kernel_check``, and what it recorded, as the metrics lines, results.json and the
summary table show it: which kernel families ran on Triton, and which fell back to the
PyTorch reference and why, so that a result never claims kernels it did not use.

Imports no torch at module level (recipe validation and ``--help`` stay fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from ..kernels.guard import KernelGuard
    from .distributed import DistContext


def make_guard(backend: str, check: bool, console: Any) -> KernelGuard:
    """The guard of a run: with ``run.backend = "triton"`` a failing family stops the run
    with one line (exit 1); otherwise it falls back to PyTorch with one warning line."""
    from ..kernels.guard import KernelGuard

    def error(line: str) -> UserError:
        return UserError(
            f"{line}; run.backend = 'triton' asks for Triton only (use 'auto' to fall back "
            "to PyTorch, or 'torch')",
            exit_code=1,
        )

    return KernelGuard(
        check=check,
        strict=backend == "triton",
        warn=lambda line: console.print(line, markup=False),
        error=error,
    )


def run_records(guard: KernelGuard | None, dist: DistContext) -> dict[str, dict]:
    """What every rank's guard recorded, merged (a collective under torchrun: every rank
    calls it): a family ran on Triton only if it did on every rank; a rank's fallback is
    named with its rank."""
    mine = guard.records() if guard is not None else {}
    if not dist.enabled:
        return mine
    from .distributed import all_gather_objects

    merged: dict[str, dict] = {}
    for rank, records in enumerate(all_gather_objects(mine, dist)):
        for family, r in records.items():
            m = merged.setdefault(family, {"ran": "triton", "checks": 0})
            m["checks"] += r["checks"]
            if "max_error" in r:
                m["max_error"] = max(m.get("max_error", 0.0), r["max_error"])
            if r["ran"] != "triton":
                m["ran"] = r["ran"]
                m["reason"] = "; ".join(
                    filter(None, [m.get("reason"), f"rank {rank}: {r['reason']}"])
                )
    return dict(sorted(merged.items()))


def ran_on(records: dict[str, dict]) -> dict[str, str]:
    """Family -> "triton", or "torch (fell back: why)": the metrics line's ``kernels``."""
    return {
        family: "triton" if r["ran"] == "triton" else f"torch (fell back: {r['reason']})"
        for family, r in records.items()
    }


def metrics_fields(records: dict[str, dict]) -> dict[str, Any]:
    """``{"kernels": ...}`` for an epoch's metrics line once any family was asked to run on
    Triton; nothing otherwise (a CPU run's lines are as they were)."""
    return {"kernels": ran_on(records)} if records else {}


def results_fields(records: dict[str, dict]) -> dict[str, Any]:
    """``{"kernels": family -> {ran, checks, max_error, reason}}`` for results.json."""
    return {"kernels": records} if records else {}


def summary_rows(results: dict) -> list[tuple[str, str]]:
    """The summary table's rows: the families on Triton, and each that fell back."""
    records = results.get("kernels") or {}
    on_triton = [f for f, r in records.items() if r["ran"] == "triton"]
    rows = [("kernels on Triton", ", ".join(on_triton))] if on_triton else []
    rows += [
        (f"{family} fell back to PyTorch", r["reason"])
        for family, r in records.items()
        if r["ran"] != "triton"
    ]
    return rows
