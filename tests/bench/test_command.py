"""The body of altgrad-bench (``bench/command.py``): every family has a title, and the
families asked for are measured in the fixed order, one report entry each, as far as the
time budget allows (what it does not allow is named as skipped)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from altgrad_triton import bench
from altgrad_triton.bench.command import TITLES, run_families
from altgrad_triton.config.names import BENCH_FAMILIES

ENV = bench.Env(torch.device("cpu"), False, "cpu", "", "t", "tr", "d")
ARGS = SimpleNamespace(qrnn_recipe=bench.QRNN_RECIPE, lstm_recipe=bench.LSTM_RECIPE)


class Added:
    """A report that keeps what it is given."""

    def __init__(self):
        self.entries: list[tuple[str, list]] = []

    def add(self, title, rows):
        self.entries.append((title, list(rows)))


def measure(families, budget_s):
    report, budget = Added(), bench.Budget(budget_s, families)
    shapes = bench.plan_shapes(ENV, True, ARGS)  # the CPU's tiny shapes
    run_families(ENV, ARGS, shapes, families, bench.Timer(ENV, 1.0, 2.0), budget, report)
    return report.entries, budget.skipped


def test_every_family_has_a_title():
    assert set(TITLES) == set(BENCH_FAMILIES)


def test_the_families_asked_for_are_measured_in_the_fixed_order():
    entries, skipped = measure(["sg_loss", "fo_pool"], None)
    assert [title for title, _ in entries] == [TITLES["fo_pool"], TITLES["sg_loss"]]
    for (_, rows), family in zip(entries, ("fo_pool", "sg_loss"), strict=True):
        assert rows and {r.family for r in rows} == {family}
        assert all(r.ms > 0 for r in rows) and "triton" not in {r.provider for r in rows}
    assert skipped == []


def test_a_spent_budget_skips_every_measurement_and_names_each():
    entries, skipped = measure(["fo_pool", "sg_loss"], 0.0)
    assert entries == [(TITLES["fo_pool"], []), (TITLES["sg_loss"], [])]
    assert [s.split()[0] for s in skipped] == ["fo_pool", "sg_loss"]
    assert skipped[0].startswith("fo_pool B=2 T=8 H=16")
