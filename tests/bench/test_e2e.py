"""The end-to-end family of altgrad-bench (``bench/e2e.py``): the kernel checks' cost, a
checked training segment against an unchecked one."""

import pytest
import torch

from altgrad_triton import bench, kernels


@pytest.mark.skipif(not kernels.interpreting(), reason="Triton on the CPU: the interpreter")
def test_the_kernel_checks_cost_is_measured_on_a_checked_segment_against_an_unchecked_one():
    """The e2e family's 'kernel check' row (on a GPU): a segment with every family's first
    check against the same segment without, after a warm-up; here through the interpreter
    at the tiny CPU shapes."""
    from altgrad_triton.bench import e2e

    env = bench.Env(torch.device("cpu"), False, "cpu", "", "t", "tr", "d")
    checked, plain, segments = e2e.check_cost(
        env, e2e.QRNN_RECIPE, ["synthetic.enabled=true"], "triton", "float32", 1, "synthetic"
    )
    assert checked > plain > 0  # the check runs two more forwards and backwards per family
    assert segments == e2e.WT2_TRAIN_TOKENS // (4 * 8)  # the tiny shapes' batch and length
