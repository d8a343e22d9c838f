"""The device self-test's cases and verdicts (``tune/doctor.py``; the command is
tests/cli/test_doctor.py's): every family in both training dtypes at a recipe's shapes, a
failure as a 'fallback' outcome rather than a raise, and outcomes as JSON takes them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from altgrad_triton.kernels import interpreting

from altgrad_triton.tune import doctor

FAMILIES = {"lstm", "fo_pool", "elementwise", "authors_scan", "sg_loss", "linear_ce"}
CPU = torch.device("cpu")


def test_every_family_in_both_dtypes_and_each_layer_size_once():
    shapes = dataclasses.replace(doctor.SMALL, hidden=(24, 24, 16), output_gate=False)
    cases = doctor.cases(shapes)
    assert {(c.family, c.dtype) for c in cases} == {(f, d) for f in FAMILIES for d in doctor.DTYPES}
    for family in ("lstm", "fo_pool"):
        assert [c.shape for c in cases if c.family == family and c.dtype == torch.float32] == [
            "T=5 B=3 H=24",
            "T=5 B=3 H=16",
        ]
    fo_pool = next(c for c in cases if c.family == "fo_pool")
    _, (gates, c0), kwargs = fo_pool.make(CPU)
    assert gates.shape == (5, 3, 2 * 24) and kwargs == {"output_gate": False}  # no o gate
    n = shapes.batch * shapes.state_size
    assert [c.shape for c in cases if c.family == "sg_loss"][0] == f"N={n}"
    fn, args, _ = next(c for c in cases if c.family == "elementwise").make(CPU)
    assert args[1].shape == (n, shapes.synth_hidden)
    assert all(a.requires_grad for a in args[:6])  # every gradient is checked


def test_a_family_that_raises_is_a_fallback_outcome_not_a_raise():
    def broken(x, backend="auto"):
        raise RuntimeError("out of resources: shared memory\n(a page of compiler output)")

    case = doctor.Case("lstm", "T=1", torch.float32, lambda d: (broken, (torch.ones(2),), {}))
    outcome = doctor.check(case, CPU, repeats=0)
    assert not outcome.passed and outcome.verdict == "fallback"
    assert outcome.error == "RuntimeError: out of resources: shared memory"
    assert (outcome.family, outcome.shape, outcome.dtype) == ("lstm", "T=1", "float32")


def test_an_outcome_is_json_with_null_for_what_is_not_finite():
    outcome = doctor.Outcome("sg_loss", "N=8", "float32", passed=False, max_error=math.inf,
                             tolerance=1e-5, worst="loss")  # fmt: skip
    out = outcome.to_dict()
    assert out["max_error"] is None and out["tolerance"] == 1e-5 and out["verdict"] == "fallback"
    passed = doctor.Outcome("sg_loss", "N=8", "float32", passed=True, max_error=0.0)
    assert passed.to_dict()["verdict"] == "pass" and passed.to_dict()["max_error"] == 0.0


@pytest.mark.skipif(not interpreting(), reason="the interpreter's small shapes")
def test_a_sound_family_passes_within_its_tolerance():
    case = next(c for c in doctor.cases(doctor.SMALL, (torch.float32,)) if c.family == "sg_loss")
    outcome = doctor.check(case, CPU, repeats=0)
    assert outcome.passed and outcome.max_error < outcome.tolerance
    assert outcome.triton_ms is None  # repeats=0: not timed
