"""A sweep's tables (``tune/tables.py``): a config's meta-parameters as one string, every
config's timing against the best with the winner marked and failures last, and the
winners of every sweep."""

from __future__ import annotations

import torch
from rich.console import Console

from altgrad_triton import tune
from altgrad_triton.tune.results import SweepResult, Trial
from altgrad_triton.tune.tables import format_meta, result_table, winners_table


def rendered(table) -> list[str]:
    console = Console(record=True, width=200)
    console.print(table)
    return [line.rstrip() for line in console.export_text().splitlines()]


def sweep() -> SweepResult:
    job = tune.fo_pool_jobs(2, 3, 16, torch.float32)[0]
    job.key = ("float32", 32)
    return SweepResult(job, [
        Trial({"BLOCK_H": 8, "CHUNK": 4, "num_warps": 1, "num_stages": 1}, timing=(2.0, 1.8, 2.5)),
        Trial({"BLOCK_H": 24, "CHUNK": 4, "num_warps": 1, "num_stages": 1}, error="no power of 2"),
        Trial({"BLOCK_H": 16, "CHUNK": 4, "num_warps": 2, "num_stages": 1}, timing=(0.5, 0.4, 0.6)),
    ])  # fmt: skip


def test_a_config_is_its_block_sizes_then_its_launch_settings():
    meta = {"num_warps": 4, "BLOCK_H": 16, "num_stages": 2, "CHUNK": 8}
    assert format_meta(meta) == "BLOCK_H=16 CHUNK=8 warps=4 stages=2"


def test_the_sweep_table_ranks_the_ok_configs_then_lists_the_failed_ones():
    lines = rendered(result_table(sweep()))
    assert lines[0].startswith("fo_pool_fwd") and "key ('float32', 32)" in lines[0]
    rows = [x for x in lines if "BLOCK_H=" in x]
    assert [r.split("│")[1].strip() for r in rows] == [
        "BLOCK_H=16 CHUNK=4 warps=2 stages=1",
        "BLOCK_H=8 CHUNK=4 warps=1 stages=1",
        "BLOCK_H=24 CHUNK=4 warps=1 stages=1",
    ]
    cells = [[c.strip() for c in r.split("│")[2:6]] for r in rows]
    assert cells == [
        ["0.5000", "0.4000-0.6000", "1.00", "winner"],
        ["2.0000", "1.8000-2.5000", "4.00", ""],
        ["-", "-", "-", "failed: no power of 2"],
    ]


def test_an_aborted_sweep_says_why_under_its_table():
    result = sweep()
    result.aborted = "CUDA error: an illegal memory access"
    assert "sweep stopped: CUDA error: an illegal memory access" in "\n".join(
        rendered(result_table(result))
    )


def test_the_winners_table_has_a_row_per_sweep_and_says_where_they_went(tmp_path):
    failed = sweep()
    failed.trials = [t for t in failed.trials if not t.ok]
    lines = rendered(winners_table([sweep(), failed], tmp_path / "winners.json"))
    assert lines[0] == f"winners -> {tmp_path / 'winners.json'}"
    rows = [x for x in lines if x.startswith("│ fo_pool_fwd")]
    assert len(rows) == 2
    assert "BLOCK_H=16 CHUNK=4 warps=2 stages=1" in rows[0] and "0.5000" in rows[0]
    assert rows[0].rstrip(" │").endswith("2/3")
    assert "none (all failed)" in rows[1] and rows[1].rstrip(" │").endswith("0/1")
    assert rendered(winners_table([], None))[0] == "winners (not saved)"
