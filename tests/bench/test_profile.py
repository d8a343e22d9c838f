"""The profile of one training segment (``bench/profile.py``): each marked part's host and
device time and share of the segment, and the heading above the table."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from altgrad_triton.bench.profile import part_shares, profile_title


def event(key, cpu_us, device_us=0.0, self_device_us=0.0, count=1):
    """One row of ``prof.key_averages()`` as part_shares reads it (times in microseconds)."""
    return SimpleNamespace(key=key, cpu_time_total=cpu_us, device_time_total=device_us,
                           self_device_time_total=self_device_us, count=count)  # fmt: skip


def test_each_marked_part_gets_its_time_and_share_of_the_segment():
    averages = [
        event("segment", 10_000.0),
        event("aten::mm", 6_000.0, self_device_us=3_000.0),
        event("lm_head: linear_cross_entropy", 2_500.0, device_us=1_000.0),
        event("synthesizer: fit", 500.0, count=3),
    ]
    lines = part_shares(averages).splitlines()
    assert lines[0].startswith("share of the segment")
    head, fit = lines[1].split(), lines[2].split()
    assert head[:2] == ["lm_head:", "linear_cross_entropy"]
    assert "2.500 ms (25.0%)" in lines[1] and "device 1.000 ms (33.3%)" in lines[1]
    assert lines[1].endswith("x1")
    assert "0.500 ms (5.0%)" in lines[2] and "device -" in lines[2] and fit[-1] == "x3"
    assert len(lines) == 3  # aten::mm is no marked part


def test_a_segment_without_marked_parts_says_so():
    text = part_shares([event("segment", 1_000.0), event("aten::add", 10.0)])
    assert text.splitlines()[1].strip() == "(no marked part ran in this segment)"
    assert "(-)" in part_shares([event("lm_head", 5.0)])  # no segment range: no share


def test_the_heading_names_the_recipe_mode_backend_and_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    title = profile_title("recipes/wt2.toml", "torch", "float32", "synthetic")
    assert title.startswith("one training segment of wt2.toml (synthetic mode, backend torch")
    assert "on the CPU (reference path, tiny shapes)" in title
