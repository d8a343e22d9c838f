"""altgrad-doctor: every family and dtype checked against its reference; one line without
a GPU; a family that fails is a 'fallback' row and exit code 1."""

from __future__ import annotations

import json

import pytest
import triton
from altgrad_triton.kernels import lstm as lstm_mod

from altgrad_triton import kernels
from altgrad_triton.cli import doctor as doctor_cli
from tests.helpers import run_command

FAMILIES = {"lstm", "fo_pool", "elementwise", "authors_scan", "sg_loss", "linear_ce"}


def test_without_a_gpu_it_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code, out, err = run_command(doctor_cli.main, capsys)
    assert code == 0 and err == ""
    assert out.strip() == doctor_cli.NO_GPU


@pytest.mark.skipif(not kernels.interpreting(), reason="the interpreter's small shapes")
def test_under_the_interpreter_every_family_passes_in_both_dtypes(capsys):
    code, out, _ = run_command(doctor_cli.main, capsys, "--json")
    report = json.loads(out)
    assert code == 0, out
    seen = {(c["family"], c["dtype"]) for c in report["cases"]}
    assert seen == {(f, d) for f in FAMILIES for d in ("float32", "bfloat16")}
    assert all(c["verdict"] == "pass" and c["max_error"] < c["tolerance"] for c in report["cases"])
    assert "Triton interpreter" in report["device"]


@pytest.mark.skipif(not kernels.interpreting(), reason="the interpreter's small shapes")
def test_a_failing_family_is_a_fallback_row_and_exit_1(monkeypatch, capsys):
    def out_of_resources(*args, **kwargs):
        raise triton.runtime.errors.OutOfResources(147_456, 101_376, "shared memory")

    monkeypatch.setattr(lstm_mod, "lstm_segment_forward", out_of_resources)
    code, out, _ = run_command(doctor_cli.main, capsys, "--json")
    cases = json.loads(out)["cases"]
    assert code == 1
    failed = [c for c in cases if c["verdict"] != "pass"]
    assert {c["family"] for c in failed} == {"lstm"} and len(failed) == 2
    assert all(c["error"].startswith("OutOfResources") for c in failed)


def test_a_recipe_that_does_not_exist_is_one_line(capsys):
    code, _, err = run_command(doctor_cli.main, capsys, "no-such-recipe")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["no-such-recipe"], ["wt2", "--repeats", "-1"],
                                  ["wt2", "model.hidden_size=abc"]])  # fmt: skip
def test_a_mistake_is_one_line_even_without_a_gpu(monkeypatch, capsys, args):
    """The hostile sweep: without a GPU these exited 0 with the no-GPU line."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code, out, err = run_command(doctor_cli.main, capsys, *args)
    assert code == 2 and out == "" and err.startswith("error: "), (out, err)
