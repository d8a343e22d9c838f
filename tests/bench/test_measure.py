"""Measuring (``bench/measure.py``): ratios and metrics against ours, and the device-copy
baseline rows."""

import pytest
import torch

from altgrad_triton import bench


def test_ratio_and_metrics_against_ours():
    env = bench.Env(torch.device("cpu"), True, "x", "9.0", "t", "tr", "d", copy_gbps=1000.0)
    group = bench.Group(
        "sg_loss", "s", "float32", [], bytes={"fwd": 1e9, "bwd": 1e9, "fwd+bwd": 2e9}
    )
    rows = [
        bench.Row("sg_loss", "s", "float32", "fwd", "triton", ms=2.0),
        bench.Row("sg_loss", "s", "float32", "fwd", "torch", ms=6.0),
        bench.Row("sg_loss", "s", "float32", "fwd", "compile", note="n/a: boom"),
    ]
    bench.add_metrics(rows, group, env)
    assert rows[0].ratio == 1.0 and rows[1].ratio == 3.0 and rows[2].ratio is None
    assert rows[0].metric == pytest.approx(500.0) and rows[0].pct == pytest.approx(50.0)


def test_copy_baseline_rows_time_a_copy_of_the_same_bytes():
    """On a GPU a group can be set against a device copy moving its bytes per direction;
    here the copy runs on the CPU under a GPU-mode Env, only to check the rows."""
    env = bench.Env(torch.device("cpu"), True, "x", "9.0", "t", "tr", "d", copy_gbps=1.0)
    group = bench.Group("fo_pool", "s", "float32", [], bytes={"fwd": 8e5, "bwd": 16e5})
    group.directions, group.copy_baseline = ("fwd", "bwd"), True
    timer = bench.Timer(env, 1.0, 5.0)
    rows = bench.measure_group(group, timer, env, bench.Budget(None, ["fo_pool"]))
    copies = [r for r in rows if r.provider == "copy"]
    assert [r.direction for r in copies] == ["fwd", "bwd"]
    assert all(r.ms > 0 and r.unit == "GB/s" and r.metric > 0 for r in copies)
    group.copy_baseline = False
    assert not [
        r
        for r in bench.measure_group(group, timer, env, bench.Budget(None, []))
        if r.provider == "copy"
    ]
