"""The kernels package: every family module is reachable under its own name (no function
re-exported over a module), and the one autotune-then-pin rule that every launcher uses."""

import pkgutil
import types

import altgrad_triton.kernels as kernels
import pytest
import triton
from altgrad_triton.kernels import _common, tuning


def test_every_kernel_module_is_a_module_attribute():
    names = [m.name for m in pkgutil.iter_modules(kernels.__path__)]
    assert "fo_pooling" in names and "lstm" in names
    for name in names:
        assert isinstance(getattr(kernels, name), types.ModuleType), name


class FakeKernel:
    """Records launches as (grid, kwargs); ``kernel[grid](*args, **kw)`` like a JITFunction."""

    def __init__(self, best: triton.Config | None = None):
        self.calls, self.best_config = [], best

    def __getitem__(self, grid):
        def run(*args, **kw):
            self.calls.append((grid(self.best_config.kwargs) if callable(grid) else grid, kw))

        return run


@pytest.fixture
def clean_overrides():
    yield
    tuning.clear_overrides("fake_kernel")


def test_first_launch_autotunes_and_pins_then_launches_plainly(clean_overrides):
    best = triton.Config({"BLOCK": 32}, num_warps=4, num_stages=2)
    plain, tuned = FakeKernel(), FakeKernel(best)
    launcher = _common.PinningLauncher(
        "fake_kernel", plain, tuned, key=("k",), grid=lambda m: (m["BLOCK"],), meta=None
    )
    assert launcher(1, X=True) == {"BLOCK": 32, "num_warps": 4, "num_stages": 2}
    assert len(tuned.calls) == 1 and plain.calls == []
    assert tuning.get_override("fake_kernel", ("k",)) == launcher.meta  # a resumed run reuses it
    launcher(2, X=True)
    launcher(3, X=True)
    assert len(tuned.calls) == 1
    assert [kw for _, kw in plain.calls] == [{"X": True, "BLOCK": 32, "num_warps": 4,
                                               "num_stages": 2}] * 2  # fmt: skip
    assert [grid for grid, _ in plain.calls] == [(32,), (32,)]


def test_a_chosen_config_never_autotunes(clean_overrides):
    plain, tuned = FakeKernel(), FakeKernel()
    meta = _common.choose_meta("fake_kernel", ("k",), lambda: {"BLOCK": 16}, {"BLOCK": 64})
    launcher = _common.PinningLauncher(
        "fake_kernel", plain, tuned, key=("k",), grid=lambda m: (m["BLOCK"],), meta=meta
    )
    launcher()
    assert tuned.calls == [] and plain.calls == [((64,), {"BLOCK": 64})]
    assert tuning.get_override("fake_kernel", ("k",)) is None
