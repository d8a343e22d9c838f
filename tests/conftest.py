"""Test-wide setup.

Without a GPU, ``TRITON_INTERPRET=1`` is set before triton is first imported so that the
Triton kernels run on the CPU through the interpreter; training code on the CPU still takes
the PyTorch reference path unless a test forces ``backend="triton"``. On a machine with an
NVIDIA device the variable is left alone, so ``pytest tests/gpu`` compiles real kernels.
"""

import os

if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def nan_poison(monkeypatch):
    """Fill every fresh floating-point ``torch.empty``/``empty_like`` with NaN.

    A kernel that forgets to write part of its output then produces NaN there, which the
    comparison against the reference catches.
    """
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poisoned(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poisoned(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poisoned(real_empty_like(*a, **k)))
    yield


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_kernel_guard_left():
    """No test leaves a kernel guard active for the next one (a run activates its own
    while it trains)."""
    from altgrad_triton.kernels import guard

    yield
    guard.activate(None)


@pytest.fixture
def triton_device(monkeypatch):
    """Run a kernel test's Triton path where it can run: CPU tensors under the interpreter,
    CUDA tensors on a GPU machine (tensor factories inside the test land on that device).
    Every launch takes the single heuristic config, as under the interpreter: autotuning
    every candidate for every tiny shape would take minutes (tests/gpu covers autotune)."""
    from altgrad_triton.kernels import interpreting, tuning

    device = "cpu" if interpreting() else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("TRITON_INTERPRET is off and no CUDA device can run the kernels")
    monkeypatch.setattr(tuning, "interpreting", lambda: True)
    with torch.device(device):
        yield device


@pytest.fixture
def no_kernel_overrides():
    """No kernel config override (a stored tuning winner) reaches the test or outlives it:
    ``pytestmark = pytest.mark.usefixtures("no_kernel_overrides")`` in a module that applies
    winners."""
    from altgrad_triton.kernels import tuning

    tuning.clear_overrides()
    yield
    tuning.clear_overrides()


# The run fixtures below import tests.helpers when used: tests/test_conftest.py runs a copy of
# this file outside the repository, where no test asks for them.


@pytest.fixture
def corpus_dir(tmp_path):
    """A tiny corpus (``tests.helpers.tiny_corpus``, 120 training lines) in tmp_path/data."""
    from tests.helpers import tiny_corpus

    return tiny_corpus(tmp_path / "data", n_train=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run (``tests.helpers.tiny_recipe``) trained for one epoch, one per module."""
    from tests.helpers import fit_tiny_run

    return fit_tiny_run(tmp_path_factory.mktemp("trained"), run={"epochs": 1})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run trained for its recipe's two epochs, one per module."""
    from tests.helpers import fit_tiny_run

    return fit_tiny_run(tmp_path_factory.mktemp("use"))


def pytest_runtest_setup(item):
    """``ALTGRAD_TEST_DEADLINE`` (Unix seconds): past it, start no further test, so pytest
    ends on its own and prints its summary (scripts/gpu-check.sh sets it a grace period
    before the step's hard limit, where a SIGKILL ends a test that runs on)."""
    import time

    deadline = os.environ.get("ALTGRAD_TEST_DEADLINE")
    if deadline and time.time() > float(deadline):
        item.session.shouldstop = f"ALTGRAD_TEST_DEADLINE passed: {item.nodeid} and later not run"
        pytest.skip("ALTGRAD_TEST_DEADLINE passed")
