"""The kernel guard (kernels/guard.py, altgrad_triton/kernel_check.py): a Triton family that
raises or returns wrong values on the device falls back to the PyTorch reference with one
warning line, and the run records it; with ``run.backend = "triton"`` it is a one-line error.

Faults are injected into the families' Triton paths, which run under the interpreter; a
training run is driven through them by standing in a GPU for ``auto``
(``_dispatch.on_gpu``), as a user's GPU run would go.
"""

from __future__ import annotations

import json

import pytest
import torch
import triton
from altgrad_triton.kernels import _dispatch, guard
from altgrad_triton.kernels import elementwise as ew
from altgrad_triton.kernels import linear_ce as lce
from altgrad_triton.kernels import lstm as lstm_mod
from altgrad_triton.kernels import sg_loss as sgl

from altgrad_triton import kernels
from altgrad_triton.cli import train as train_cli
from altgrad_triton.config.recipe import to_toml
from altgrad_triton.run.train import Trainer
from tests.helpers import run_command, tiny_corpus, tiny_recipe

pytestmark = pytest.mark.skipif(
    not kernels.interpreting(), reason="fault injection drives the interpreter's Triton path"
)


def _out_of_resources(*args, **kwargs):
    raise triton.runtime.errors.OutOfResources(147_456, 101_376, "shared memory")


def _compile_error(*args, **kwargs):
    raise triton.compiler.errors.CompilationError(None, None, "unsupported layout on sm_86")


def _wrong_sg_loss(real):
    def launch(*args, **kwargs):
        loss, telemetry = real(*args, **kwargs)
        return loss * 2, telemetry

    return launch


def _wrong_ce_rows(real):
    def rows(z, targets, loss, scale, grad):
        real(z, targets, loss, scale, grad)
        loss.mul_(1.5)

    return rows


@pytest.fixture
def faults(monkeypatch):
    """Every family a tiny LSTM run with the toolkit synthesizer uses, broken on Triton:
    the LSTM and the synthesizer raise at launch, the SG loss and the LM head compute
    wrong values."""
    monkeypatch.setattr(lstm_mod, "lstm_segment_forward", _out_of_resources)
    monkeypatch.setattr(ew, "elementwise_forward", _compile_error)
    monkeypatch.setattr(sgl, "_launch", _wrong_sg_loss(sgl._launch))
    monkeypatch.setattr(lce, "ce_rows_triton", _wrong_ce_rows(lce.ce_rows_triton))


@pytest.fixture
def as_if_on_gpu(monkeypatch):
    """``auto`` takes the Triton path for CPU tensors (run by the interpreter)."""
    monkeypatch.setattr(_dispatch, "on_gpu", lambda tensors: True)


@pytest.fixture(autouse=True)
def _no_guard_left():
    yield
    guard.activate(None)


def _recipe(tmp_path, backend: str, name: str):
    return tiny_recipe(
        tiny_corpus(tmp_path / "data"),
        tmp_path / "runs",
        run={"name": name, "epochs": 1, "max_batches": 3, "max_eval_batches": 2,
             "backend": backend},
        model={"layers": 1},
        synthetic={"enabled": True, "hidden": 4},
    )  # fmt: skip


def _numbers(run_dir):
    """The metrics and results that do not depend on the clock or the kernels' record."""
    drop = {"tokens_per_s", "seconds", "kernels"}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run_dir / "results.json").read_text())
    return [{k: v for k, v in r.items() if k not in drop} for r in rows], {
        k: v for k, v in results.items() if k not in drop
    }


# --------------------------------------------------------------------------- a run


def test_a_run_whose_kernels_all_fail_finishes_on_pytorch_with_the_torch_runs_numbers(
    tmp_path, faults, as_if_on_gpu, capsys
):
    reference = tmp_path / "torch"
    Trainer(_recipe(reference, "torch", "tiny"), reference / "runs" / "tiny").fit()
    capsys.readouterr()

    guarded = tmp_path / "auto"
    Trainer(_recipe(guarded, "auto", "tiny"), guarded / "runs" / "tiny").fit()
    out = capsys.readouterr().out

    assert _numbers(guarded / "runs" / "tiny") == _numbers(reference / "runs" / "tiny")
    warnings = [line for line in out.splitlines() if line.startswith("warning: kernel ")]
    assert len(warnings) == 4, out
    for family, why in (
        ("lstm", "OutOfResources"),
        ("elementwise", "CompilationError"),
        ("sg_loss", "max error"),
        ("linear_ce", "max error"),
    ):
        line = next(w for w in warnings if w.startswith(f"warning: kernel {family} "))
        assert why in line and "cpu (Triton interpreter)" in line and "config" in line, line
    results = json.loads((guarded / "runs" / "tiny" / "results.json").read_text())
    assert {f: r["ran"] for f, r in results["kernels"].items()} == {
        "elementwise": "torch", "linear_ce": "torch", "lstm": "torch", "sg_loss": "torch"
    }  # fmt: skip
    assert "OutOfResources" in results["kernels"]["lstm"]["reason"]
    line = json.loads((guarded / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["kernels"]["lstm"].startswith("torch (fell back: OutOfResources")
    assert "lstm fell back to PyTorch" in out  # the summary table


def test_a_torch_run_records_no_kernels(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    Trainer(_recipe(tmp_path, "torch", "tiny"), run_dir).fit()
    assert "kernels" not in json.loads((run_dir / "results.json").read_text())
    assert "kernels" not in (run_dir / "metrics.jsonl").read_text()


@pytest.mark.parametrize("fault", ["launch", "wrong values"])
def test_explicit_triton_turns_a_failing_kernel_into_one_line(tmp_path, monkeypatch, capsys, fault):
    if fault == "launch":
        monkeypatch.setattr(lstm_mod, "lstm_segment_forward", _out_of_resources)
    else:
        monkeypatch.setattr(lce, "ce_rows_triton", _wrong_ce_rows(lce.ce_rows_triton))
    path = tmp_path / "recipe.toml"
    path.write_text(to_toml(_recipe(tmp_path, "triton", "strict")))
    code, _, err = run_command(train_cli.main, capsys, path)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: kernel "), err
    assert ("OutOfResources" if fault == "launch" else "max error") in lines[0]
    assert "run.backend = 'triton'" in lines[0]


# --------------------------------------------------------------------------- the guard alone


def _sg_inputs():
    pred = torch.randn(6, 40, requires_grad=True)
    return pred, torch.randn(6, 40)


def test_a_sound_family_is_checked_once_per_shape_class_and_stays_on_triton():
    g = guard.KernelGuard(warn=pytest.fail)
    with guard.guarding(g):
        for rows in (6, 7, 6, 12):  # 6 and 7 share a class (8); 12 is another (16)
            pred = torch.randn(rows, 40, requires_grad=True)
            loss, _, _ = kernels.sg_mse_loss_with_stats(
                pred, torch.randn(rows, 40), backend="triton"
            )
            loss.backward()
    record = g.records()["sg_loss"]
    assert record["ran"] == "triton" and record["checks"] == 2
    assert record["max_error"] < 1e-4


def test_the_check_sees_a_wrong_gradient(monkeypatch):
    real = lstm_mod.LSTMSegmentFunction.backward

    def wrong_dw(ctx, *grads):
        dgx, dw, dh0, dc0, none = real(ctx, *grads)
        return dgx, dw * 1.1, dh0, dc0, none

    monkeypatch.setattr(lstm_mod.LSTMSegmentFunction, "backward", staticmethod(wrong_dw))
    gx = torch.randn(4, 3, 32, requires_grad=True)
    w = (torch.randn(32, 8) * 0.3).requires_grad_()
    h0, c0 = torch.randn(3, 8), torch.randn(3, 8)
    result = guard.compare(lstm_mod.lstm_segment, (gx, w, h0, c0), {"backend": "triton"},
                           family="lstm")  # fmt: skip
    assert not result.passed and result.worst.startswith("grad of input 1 "), result


def test_the_check_leaves_the_callers_tensors_and_global_rng_alone():
    pred, target = _sg_inputs()
    before = torch.random.get_rng_state()
    guard.compare(sgl.sg_mse_loss, (pred, target), {"backend": "triton"}, family="sg_loss")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert pred.grad is None


def test_without_an_active_guard_the_functions_are_the_families_own(monkeypatch):
    monkeypatch.setattr(lstm_mod, "lstm_segment_forward", _out_of_resources)
    assert guard.active() is None
    with pytest.raises(triton.runtime.errors.OutOfResources):
        kernels.lstm_segment(
            torch.randn(2, 3, 32), torch.randn(32, 8), torch.zeros(3, 8), torch.zeros(3, 8),
            backend="triton",
        )  # fmt: skip


def test_check_off_still_falls_back_on_a_launch_error(monkeypatch):
    monkeypatch.setattr(lstm_mod, "lstm_segment_forward", _out_of_resources)
    said: list[str] = []
    g = guard.KernelGuard(check=False, warn=said.append)
    args = (torch.randn(2, 3, 32), torch.randn(32, 8), torch.zeros(3, 8), torch.zeros(3, 8))
    with guard.guarding(g):
        out = kernels.lstm_segment(*args, backend="triton")
    torch.testing.assert_close(out, lstm_mod.lstm_segment_reference(*args))
    assert len(said) == 1 and g.records()["lstm"]["ran"] == "torch"
    assert g.records()["lstm"]["checks"] == 0


# --------------------------------------------------------------------------- what it checks


def _lstm_args(grad: bool = True):
    gx = torch.randn(5, 3, 32, requires_grad=grad)
    w = (torch.randn(32, 8) * 0.3).requires_grad_(grad)
    return gx, w, torch.randn(3, 8), torch.randn(3, 8)


def test_an_evaluation_only_fault_is_caught_under_no_grad(monkeypatch):
    """Evaluation runs the forward without saving for a backward: another kernel
    specialisation, checked as it is called."""
    real = lstm_mod.lstm_segment_forward

    def wrong_when_not_saving(*args, save_for_backward=True, **kwargs):
        h_all, c_all, act = real(*args, save_for_backward=save_for_backward, **kwargs)
        return (h_all if save_for_backward else h_all * 2), c_all, act

    monkeypatch.setattr(lstm_mod, "lstm_segment_forward", wrong_when_not_saving)
    said: list[str] = []
    g = guard.KernelGuard(warn=said.append)
    args = _lstm_args()
    with guard.guarding(g):
        kernels.lstm_segment(*args, backend="triton")[0].sum().backward()  # training: fine
        assert g.records()["lstm"]["ran"] == "triton"
        with torch.no_grad():
            out = kernels.lstm_segment(*args, backend="triton")
    assert g.records()["lstm"]["ran"] == "torch" and len(said) == 1
    torch.testing.assert_close(out[0], lstm_mod.lstm_segment_reference(*args)[0])


def test_a_fault_only_without_gradients_on_the_carried_states_is_caught(monkeypatch):
    """In real mode the carried h_T and c_T get no gradient (None): the backward kernels'
    case of their own, which the check runs too."""
    real = lstm_mod.lstm_segment_backward

    def wrong_without_carried_grads(w, h_all, c_all, act, dh_seq, dh_T, dc_T, **kwargs):
        dgates, dh0, dc0 = real(w, h_all, c_all, act, dh_seq, dh_T, dc_T, **kwargs)
        return (dgates * 1.5 if dh_T is None and dc_T is None else dgates), dh0, dc0

    monkeypatch.setattr(lstm_mod, "lstm_segment_backward", wrong_without_carried_grads)
    result = guard.compare(lstm_mod.lstm_segment, _lstm_args(), {"backend": "triton"},
                           family="lstm")  # fmt: skip
    assert not result.passed and "(output 0 only)" in result.worst, result


def test_with_the_check_off_a_backward_launch_error_still_falls_back(monkeypatch):
    monkeypatch.setattr(lstm_mod, "lstm_segment_backward", _out_of_resources)
    said: list[str] = []
    g = guard.KernelGuard(check=False, warn=said.append)
    with guard.guarding(g):
        out = kernels.lstm_segment(*_lstm_args(), backend="triton")
    out[0].sum().backward()  # on the reference
    assert g.records()["lstm"] == {"ran": "torch", "checks": 0,
                                   "reason": "OutOfResources: " + g.records()["lstm"]["reason"]
                                   .removeprefix("OutOfResources: ")}  # fmt: skip
    assert "OutOfResources" in said[0]


def test_a_biased_bf16_loss_is_caught(monkeypatch):
    """0.4 nats on every row of a bf16 LM loss (perplexity x1.5) is within 5e-2 of the
    loss's scale: scalars are held to their own, tighter tolerance."""
    real = lce.ce_rows_triton

    def biased(z, targets, loss, scale, grad):
        real(z, targets, loss, scale, grad)
        loss.add_(0.4)

    monkeypatch.setattr(lce, "ce_rows_triton", biased)
    vocab, dim = 2000, 32
    h = torch.randn(64, dim).to(torch.bfloat16).requires_grad_()
    w = (torch.randn(vocab, dim) * dim**-0.5).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, vocab, (64,))
    result = guard.compare(lce.linear_cross_entropy, (h, w, None, targets),
                           {"backend": "triton"}, family="linear_ce")  # fmt: skip
    assert not result.passed and result.worst == "output 0", result


def test_a_callers_mistake_is_raised_as_itself_not_blamed_on_the_kernel():
    said: list[str] = []
    gx, w, h0, c0 = _lstm_args()
    with guard.guarding(guard.KernelGuard(warn=said.append)), pytest.raises(RuntimeError):
        kernels.lstm_segment(gx, w, h0[:, :5], c0, backend="triton")  # no such LSTM
    assert said == []


def test_a_compile_error_is_named_by_its_own_message(monkeypatch, capsys):
    monkeypatch.setattr(ew, "elementwise_forward", _compile_error)
    said: list[str] = []
    n, units = 12, 4
    args = (torch.randn(n, requires_grad=True), torch.randn(n, units), torch.randn(3, units),
            torch.randn(3, units), torch.randn(units), torch.randn(1), None)  # fmt: skip
    with guard.guarding(guard.KernelGuard(warn=said.append)):
        kernels.elementwise_qrnn_synth(*args, backend="triton")
    assert "CompilationError: unsupported layout on sm_86" in said[0], said


def test_a_fallback_is_kept_by_a_resumed_run_which_ends_as_the_straight_run(
    tmp_path, monkeypatch, as_if_on_gpu, capsys
):
    """A family that fell back stays on PyTorch after a resume (the checkpoint keeps the
    record), so the resumed run computes what the straight run did."""
    from tests.helpers import interrupt_at

    monkeypatch.setattr(lce, "ce_rows_triton", _wrong_ce_rows(lce.ce_rows_triton))
    faults_but_head = {"lstm_segment_forward": _out_of_resources}
    for name, fault in faults_but_head.items():
        monkeypatch.setattr(lstm_mod, name, fault)
    monkeypatch.setattr(ew, "elementwise_forward", _compile_error)
    monkeypatch.setattr(sgl, "_launch", _wrong_sg_loss(sgl._launch))

    def recipe(root):
        return tiny_recipe(
            tiny_corpus(root / "data"), root / "runs",
            run={"name": "r", "epochs": 2, "max_batches": 4, "max_eval_batches": 2},
            model={"layers": 1}, synthetic={"enabled": True, "hidden": 4},
        )  # fmt: skip

    straight = tmp_path / "straight"
    Trainer(recipe(straight), straight / "runs" / "r").fit()
    stopped = tmp_path / "stopped"
    interrupt_at(Trainer(recipe(stopped), stopped / "runs" / "r"), epoch=2, segment=1)
    resumed = Trainer(recipe(stopped), stopped / "runs" / "r")
    resumed.restore("last")
    assert resumed.parts.guard.records()["linear_ce"]["ran"] == "torch"
    resumed.fit()
    capsys.readouterr()
    assert _numbers(stopped / "runs" / "r") == _numbers(straight / "runs" / "r")
    results = json.loads((stopped / "runs" / "r" / "results.json").read_text())
    assert "max error" in results["kernels"]["linear_ce"]["reason"]


def test_a_run_leaves_no_guard_active(tmp_path):
    Trainer(_recipe(tmp_path, "auto", "tiny"), tmp_path / "runs" / "tiny").fit()
    assert guard.active() is None


def test_scoring_and_sampling_a_run_fall_back_as_training_does(tmp_path, monkeypatch, as_if_on_gpu):
    """altgrad-eval and altgrad-generate on a GPU whose LSTM kernel fails: a warning on
    stderr and the reference's numbers, not a crash."""
    from altgrad_triton.run.inference import load_run

    run_dir = tmp_path / "runs" / "tiny"
    Trainer(_recipe(tmp_path, "torch", "tiny"), run_dir).fit()
    reference = load_run(run_dir, device="cpu")
    want = reference.score(reference.split("valid")[:200]).loss
    words = list(reference.generate(5, seed=1))

    monkeypatch.setattr(lstm_mod, "lstm_segment_forward", _out_of_resources)
    said: list[str] = []
    run = load_run(run_dir, device="cpu", backend="auto")
    run.guard.warn = said.append
    assert run.score(run.split("valid")[:200]).loss == pytest.approx(want, rel=1e-6)
    assert list(run.generate(5, seed=1)) == words
    assert len(said) == 1 and "OutOfResources" in said[0]
    assert run.guard.records()["lstm"]["ran"] == "torch"
