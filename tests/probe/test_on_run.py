"""The probe of a trained run (``probe/on_run.py``): where its boundaries fall, the one line
for one out of range, and its summary over boundaries."""

import json

import pytest
import torch

from altgrad_triton.errors import UserError


def test_a_segment_without_loss_gives_no_ratio_and_the_mean_is_a_ratio_of_means():
    """The copy task's unscored segments have no within-segment gradient: their ratio is
    None (it was inf, which made the mean inf and the JSON invalid)."""
    from altgrad_triton.probe.on_run import summarize
    from altgrad_triton.probe.truncation import (
        BoundaryProbe,
        HorizonProbe,
        LayerShare,
        _ratio,
    )

    assert _ratio(torch.ones(2), torch.zeros(2)) is None
    shares = [LayerShare(0.0, 1.0, None, 0.0), LayerShare(2.0, 1.0, 0.5, 0.0)]
    probes = [BoundaryProbe(k, 0.0, [HorizonProbe(1, 1.0, 1.0, {"all": s})]) for k, s in
              zip((1, 2), shares, strict=True)]  # fmt: skip
    mean = summarize(probes)["1"]["layers"]["all"]
    assert mean["ratio"] == pytest.approx(1.0) and json.loads(json.dumps(mean)) == mean


def test_default_boundaries_are_spread_evenly_and_leave_room_for_the_longest_horizon():
    from altgrad_triton.probe.on_run import default_boundaries

    assert default_boundaries(20, 4, n=5) == [1, 5, 9, 12, 16]  # 16 + 4 = 20: the last fits
    assert default_boundaries(6, 4, n=5) == [1, 2]  # fewer than asked where fewer fit
    assert default_boundaries(5, 4, n=1) == [1]
    with pytest.raises(UserError, match=r"^max-horizon: 8 leaves no boundary in a stream of 8 "):
        default_boundaries(8, 8)


def test_a_boundary_whose_horizon_runs_past_the_stream_is_one_line_naming_the_field():
    from altgrad_triton.probe.on_run import check_boundaries

    check_boundaries([1, 6], segments=8, bptt=35, max_horizon=2, field="--boundaries")
    with pytest.raises(UserError) as e:
        check_boundaries([0, 3, 7], segments=8, bptt=35, max_horizon=2, field="--boundaries")
    assert str(e.value) == (
        "--boundaries: [0, 7] out of range; with 8 segments of 35 rows and a longest horizon "
        "of 2 a boundary must be from 1 to 6"
    )
