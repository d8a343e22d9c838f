"""Grouping runs (``report/aggregate.py``): seeds into groups with mean and std, the gradient-
mode phases, and the one ``--versus`` rule every table and plot pairs groups by."""

from __future__ import annotations

import math
import statistics

import pytest

from altgrad_triton import report
from altgrad_triton.report import aggregate
from tests.helpers import fake_run


def test_groups_over_seeds_with_mean_and_std(tmp_path):
    fake_run(tmp_path, "wt2-a-s1", "wikitext-2-small", [5.0, 4.5], test_loss=4.6)
    fake_run(tmp_path, "wt2-a-s2", "wikitext-2-small", [5.0, 4.7], test_loss=4.8)
    fake_run(tmp_path, "wt2-b-s1", "wikitext-2-small", [5.2, 4.9], finished=False)
    groups = report.group_runs(report.find_runs([tmp_path]))
    assert [(g.name, len(g.runs)) for g in groups] == [("wt2-a", 2), ("wt2-b", 1)]
    a = groups[0]
    vals = a.values("val")
    assert vals == pytest.approx([math.exp(4.5), math.exp(4.7)])
    mean, std = report.mean_std(vals)
    assert mean == pytest.approx(statistics.fmean(vals))
    assert std == pytest.approx(statistics.stdev(vals))
    # unfinished: best val from metrics.jsonl, no test
    b = groups[1]
    assert b.values("val") == pytest.approx([math.exp(4.9)])
    assert b.values("test") == []


def test_mode_phases_cut_where_the_mode_changes():
    epochs = [{"epoch": e, "mode": m} for e, m in enumerate("rssrrrs", 1)]
    epochs = [{**e, "mode": {"r": "real", "s": "synthetic"}[e["mode"]]} for e in epochs]
    assert [(p.mode, p.first, p.last, p.label) for p in report.mode_phases(epochs)] == [
        ("real", 1, 1, "1"),
        ("synthetic", 2, 3, "2-3"),
        ("real", 4, 6, "4-6"),
        ("synthetic", 7, 7, "7"),
    ]


def test_every_table_and_plot_pairs_groups_by_the_one_versus_rule(tmp_path):
    for seed in (1, 2):
        for name in ("a-sg", "a-bptt", "a-dni"):
            modes = ["real", "synthetic"] if name == "a-sg" else None
            fake_run(tmp_path, f"{name}-s{seed}", "ptb", [5.0, 4.0 + seed / 10], modes=modes)
    groups = report.group_runs(report.find_runs([tmp_path]))
    rules = [report.parse_versus(v) for v in ("sg=dni", "sg=bptt", "nothing=a-sg")]
    pairs = [(g.name, b.name) for g, b in aggregate.versus_pairs(groups, rules)]
    assert pairs == [("a-sg", "a-dni"), ("a-sg", "a-bptt")]  # group order, then rule order
    assert {k: b.name for k, b in aggregate.baselines(groups, rules).items()} == {
        ("ptb", "a-sg"): "a-dni"  # the first rule that maps a group wins
    }
    paired = report.paired_table(groups, rules).splitlines()
    assert [row.split(" | ")[:2] for row in paired if row.startswith("| a-")] == [
        ["| a-sg", "a-dni"],
        ["| a-sg", "a-bptt"],
    ]
    phases = report.phase_table(groups, rules).splitlines()
    assert {row.split(" | ")[1] for row in phases if row.startswith("| a-sg | a-")} == {"a-dni"}
