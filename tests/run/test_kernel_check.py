"""A run's kernel guard and what it recorded (``run/kernel_check.py``): the guard that
``run.backend`` and ``run.kernel_check`` make, and the metrics line's, results.json's and
the summary table's account of which families ran on Triton and which fell back."""

from __future__ import annotations

import pytest

from altgrad_triton.errors import UserError
from altgrad_triton.run import kernel_check
from altgrad_triton.run.distributed import SINGLE

RECORDS = {
    "fo_pool": {"ran": "triton", "checks": 2, "max_error": 1e-6},
    "lstm": {"ran": "torch", "checks": 1, "reason": "OutOfResources: shared memory"},
    "sg_loss": {"ran": "triton", "checks": 1},
}


class Printed:
    def __init__(self):
        self.lines = []

    def print(self, line, markup=False):
        self.lines.append(line)


def test_the_metrics_line_names_where_each_family_ran():
    assert kernel_check.metrics_fields(RECORDS) == {
        "kernels": {
            "fo_pool": "triton",
            "lstm": "torch (fell back: OutOfResources: shared memory)",
            "sg_loss": "triton",
        }
    }
    assert kernel_check.metrics_fields({}) == {}  # a run that asked for no Triton kernel


def test_results_and_the_summary_keep_every_fallback_and_its_reason():
    results = kernel_check.results_fields(RECORDS)
    assert results == {"kernels": RECORDS} and kernel_check.results_fields({}) == {}
    assert kernel_check.summary_rows(results) == [
        ("kernels on Triton", "fo_pool, sg_loss"),
        ("lstm fell back to PyTorch", "OutOfResources: shared memory"),
    ]
    assert kernel_check.summary_rows({}) == []


def test_backend_triton_makes_a_strict_guard_whose_failure_is_one_line_exit_1():
    console = Printed()
    strict = kernel_check.make_guard("triton", check=True, console=console)
    assert strict.strict and strict.check
    error = strict.error("lstm failed its check")
    assert isinstance(error, UserError) and error.exit_code == 1
    assert str(error).startswith("lstm failed its check; run.backend = 'triton' asks for")
    assert "\n" not in str(error)
    lenient = kernel_check.make_guard("auto", check=False, console=console)
    assert not lenient.strict and not lenient.check
    lenient.warn("warning: lstm fell back")
    assert console.lines == ["warning: lstm fell back"]


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_one_process_reports_its_own_guards_records(backend):
    guard = kernel_check.make_guard(backend, check=True, console=Printed())
    assert kernel_check.run_records(guard, SINGLE) == guard.records() == {}
    assert kernel_check.run_records(None, SINGLE) == {}  # no guard: nothing ran on Triton
