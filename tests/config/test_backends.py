"""Which backend runs on which device (``config/backends.py``): the rule against its table,
and recipe validation, the builders and inference asking that one rule; ``cudnn`` runs LSTM
layers on CUDA and leaves the other kernels on auto."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import typing

import pytest
import torch

from altgrad_triton.config import backends
from altgrad_triton.config import recipe as recipes
from altgrad_triton.config.backends import backend_problem, kernel_backend
from altgrad_triton.errors import UserError
from altgrad_triton.run import build
from altgrad_triton.run.inference import _usable_backend
from tests.helpers import tiny_corpus, tiny_recipe

BACKENDS = typing.get_args(typing.get_type_hints(recipes.RunConfig)["backend"])
CELLS = ("qrnn", "lstm")


def allowed(backend: str, cell: str, device: str | None, interpreting: bool) -> bool:
    """The rule as a table: cudnn runs LSTM layers; triton and cudnn need CUDA, except that
    the interpreter runs triton on the CPU; no device yet (a recipe) checks the cell only."""
    if backend == "cudnn" and cell != "lstm":
        return False
    if device in (None, "cuda") or backend in ("auto", "torch"):
        return True
    return backend == "triton" and interpreting


CASES = list(itertools.product(BACKENDS, CELLS, (None, "cpu", "cuda"), (False, True)))


@pytest.mark.parametrize(("backend", "cell", "device", "interp"), CASES)
def test_the_backend_rule_is_its_table(backend, cell, device, interp, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1" if interp else "0")
    assert (backend_problem(backend, cell, device) is None) == allowed(
        backend, cell, device, interp
    )


@pytest.mark.parametrize(
    ("backend", "cell", "interp"), list(itertools.product(BACKENDS, CELLS, (0, 1)))
)
def test_recipe_build_and_inference_ask_the_one_backend_rule(
    backend, cell, interp, tmp_path, monkeypatch
):
    monkeypatch.setenv("TRITON_INTERPRET", str(interp))
    problem = backend_problem(backend, cell)
    try:  # validation knows no device: the cell only
        tiny_recipe(tmp_path, tmp_path, run={"backend": backend}, model={"cell": cell})
    except UserError as e:
        assert problem and f"run.backend: {problem}" in str(e)
    else:
        assert problem is None
    for device in (torch.device("cpu"), torch.device("cuda")):  # cuda: not run, only named
        problem = backend_problem(backend, cell, device.type)
        if problem:
            with pytest.raises(UserError, match=f"^{re.escape(f'run.backend: {problem}')}$"):
                build.check_backend(backend, cell, device)
            with pytest.raises(UserError, match=f"^{re.escape(f'backend: {problem}')}$"):
                _usable_backend(backend, "auto", device, cell)
        else:
            build.check_backend(backend, cell, device)
            assert _usable_backend(backend, "auto", device, cell) == backend
        # a trained run's own backend falls back to auto where the rule refuses it
        if backend_problem(backend, cell) is None:
            got = _usable_backend(None, backend, device, cell)
            assert got == (backend if problem is None else "auto")


def test_the_rules_load_without_torch():
    """recipe validation and altgrad-report / altgrad-suite ask the rules before (or
    without) loading torch: the rules' modules must not import it."""
    code = (
        "import sys, altgrad_triton.config.backends, altgrad_triton.config.names, "
        "altgrad_triton.config.recipe, altgrad_triton.report; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- cudnn


def test_cudnn_needs_cuda_and_lstm_cells(tmp_path, monkeypatch):
    data = tiny_corpus(tmp_path / "data")
    with pytest.raises(UserError, match="run.backend: 'cudnn' runs LSTM layers, and model.cell"):
        tiny_recipe(data, tmp_path / "runs", run={"backend": "cudnn"}, model={"cell": "qrnn"})
    with pytest.raises(UserError, match="run.backend: 'cudnn' needs a CUDA device, and this run"):
        build.check_backend("cudnn", "lstm", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter makes triton, not cudnn, fine
    build.check_backend("triton", "lstm", torch.device("cpu"))
    with pytest.raises(UserError, match="'cudnn' needs a CUDA device"):
        build.check_backend("cudnn", "lstm", torch.device("cpu"))


def test_cudnn_leaves_the_synthesizer_and_sg_loss_on_the_kernels():
    assert backends.kernel_backend("cudnn") == "auto"
    assert [backends.kernel_backend(b) for b in ("auto", "torch", "triton")] == [
        "auto",
        "torch",
        "triton",
    ]


def test_cudnn_leaves_the_other_kernels_on_auto():
    assert [kernel_backend(b) for b in BACKENDS] == [
        "auto" if b == "cudnn" else b for b in BACKENDS
    ]
