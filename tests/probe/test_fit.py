"""Synthesizers fitted fresh on a run's trajectory (``probe/fit.py``, altgrad-probe --fit), the
model frozen, scored beside the run's own (issue #23 item 3)."""

import pytest
import torch

from altgrad_triton.probe.fit import FitKind, fit_on_run, fit_recipe, parse_fit_kinds
from altgrad_triton.probe.on_run import probe_run
from altgrad_triton.probe.run_stream import stream_tokens
from altgrad_triton.run.inference import load_run
from tests.helpers import trained_tiny_run

ALL_KINDS = "linear,mlp,toolkit,authors,linear+2"


@pytest.fixture(scope="module")
def bptt_run(tmp_path_factory):
    """A tiny BPTT run (no synthesizer) of window-2 QRNN layers: the authors' kind joins
    fewer state tensors than the others there."""
    qrnn = {"cell": "qrnn", "emb_size": 16, "hidden_size": 16, "layers": 2, "window": 2}
    return trained_tiny_run(tmp_path_factory.mktemp("probe-fit"), model=qrnn)


def test_fit_kinds_parse_with_their_context_tokens():
    got = parse_fit_kinds("linear, authors,linear+3")
    assert got == [FitKind("linear"), FitKind("authors"), FitKind("linear", 3)]
    assert [f.name for f in got] == ["fit:linear", "fit:authors", "fit:linear+3"]
    for bad in ("lstm", "linear+", "linear+0", "linear+x", "", "mlp,mlp"):
        with pytest.raises(ValueError):
            parse_fit_kinds(bad)


def test_each_kind_gets_the_defaults_of_a_recipe_naming_it(bptt_run):
    run = load_run(bptt_run, "best", device="cpu")
    authors = fit_recipe(run.recipe, FitKind("authors")).synthetic
    assert authors.enabled and authors.reduction == "sum" and authors.join == "recurrent"
    cdni = fit_recipe(run.recipe, FitKind("linear", 3), ["target_scale=0"]).synthetic
    assert (cdni.synthesizer, cdni.context_tokens, cdni.target_scale) == ("linear", 3, 0.0)
    assert cdni.reduction == "mean" and cdni.join == "all"


def test_fitting_leaves_the_model_bit_identical_frozen_flags_and_mode_restored(bptt_run):
    run = load_run(bptt_run, "best", device="cpu")
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.model.train()  # the fit runs it in eval mode whatever it was in, and restores it
    flags = [p.requires_grad for p in run.model.parameters()]
    tokens = stream_tokens(run, "train")
    predictors, record = fit_on_run(run, parse_fit_kinds(ALL_KINDS), 12, tokens)
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in run.model.parameters())
    assert [p.requires_grad for p in run.model.parameters()] == flags and run.model.training
    assert record["segments"] == 12 and set(predictors) == {
        f"fit:{k}" for k in ALL_KINDS.split(",")
    }
    for name, (predictor, _) in predictors.items():
        assert not predictor.synthesizer.training, name  # scored in eval mode
    # the authors' kind sees the recurrent states only (not QRNN's carried last input)
    assert predictors["fit:authors"][1] == run.model.recurrent_state_indices()
    assert len(predictors["fit:authors"][1]) < len(run.model.init_state(1))
    assert predictors["fit:linear"][1] is None


def test_fitting_kinds_together_trains_each_as_fitting_it_alone(bptt_run):
    """The kinds share one forward and backward per segment: each still gets its own
    exact target (the authors' kind its recurrent states only), step for step."""

    def fitted_weights(kinds):
        run = load_run(bptt_run, "best", device="cpu")
        predictors, record = fit_on_run(run, parse_fit_kinds(kinds), 6, stream_tokens(run, "train"))
        return {n: p.synthesizer.state_dict() for n, (p, _) in predictors.items()}, record

    together, record = fitted_weights("authors,linear+2,toolkit")
    for name in together:
        alone, alone_record = fitted_weights(name.removeprefix("fit:"))
        for key, value in alone[name].items():
            torch.testing.assert_close(together[name][key], value, rtol=1e-6, atol=1e-9)
        assert alone_record["synthesizers"][name]["sg_loss_final"] == pytest.approx(
            record["synthesizers"][name]["sg_loss_final"], rel=1e-5
        )


def test_a_fitted_linear_synthesizer_recovers_what_an_untrained_one_cannot(bptt_run):
    """Zero-initialised, a linear synthesizer predicts 0 (cos 0); fitted for one pass on
    the tiny corpus (target_scale = tokens per segment) it points along g_1, the more so
    with the next tokens as context."""
    run = load_run(bptt_run, "best", device="cpu")
    report = probe_run(
        run, None, boundaries=[3, 10, 20, 30], max_horizon=1, float64=True,
        fit=parse_fit_kinds("linear,linear+2"), fit_settings=["target_scale=0"],
    )  # fmt: skip
    assert report["fit"]["segments"] == report["segments"]  # default: one pass
    scores = report["mean"]["1"]["synthesizers"]
    assert scores["fit:linear"]["cos"] > 0.15, scores
    assert scores["fit:linear+2"]["cos"] > 0.5, scores
    fitted = report["fit"]["synthesizers"]["fit:linear+2"]
    assert fitted["sg_cos_final"] > 0.4 and fitted["sg_loss_final_over_zero"] < 0.9
