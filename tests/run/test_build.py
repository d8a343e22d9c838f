"""Builders: a recipe into components; the synthesizer's initial weights from its own stream."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import altgrad_triton
from altgrad_triton import data
from altgrad_triton.config import recipe as recipes
from altgrad_triton.config.recipe import SyntheticConfig
from altgrad_triton.core.synthesizers import (
    AuthorsSynthesizer,
    ConditionedSynthesizer,
    LinearSynthesizer,
)
from altgrad_triton.run import build
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe

ELEMENTWISE = {"enabled": True, "synthesizer": "toolkit", "hidden": 6}
KINDS = {
    "elementwise-qrnn": ELEMENTWISE,
    "elementwise-gru": {**ELEMENTWISE, "cell": "gru"},
    "elementwise-lstm": {**ELEMENTWISE, "cell": "lstm"},
    "mlp": {"enabled": True, "synthesizer": "mlp", "hidden": 8, "layers": 2, "dropout": 0.5},
    "conditioned-mlp": {"enabled": True, "synthesizer": "mlp", "hidden": 8, "context_tokens": 2},
    "linear": {"enabled": True, "synthesizer": "linear"},
    "elementwise-uniform": {**ELEMENTWISE, "init": "uniform"},
    "authors": {"enabled": True, "synthesizer": "authors", "hidden": 6},
}


def recipe_and_model(tmp_path, synthetic):
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", synthetic=synthetic)
    return r, build.build_model(r, vocab_size=17)


def test_make_synthesizer_from_recipe():
    assert isinstance(
        build.make_synthesizer(SyntheticConfig(synthesizer="linear"), 10), LinearSynthesizer
    )
    mlp = build.make_synthesizer(SyntheticConfig(synthesizer="mlp", hidden=7, layers=2), 10)
    assert mlp(torch.randn(2, 10), None)[0].abs().sum() == 0  # zero-initialised output
    conditioned = build.make_synthesizer(SyntheticConfig(), 5, context_size=7)
    assert isinstance(conditioned, ConditionedSynthesizer)


@pytest.mark.parametrize("kind", list(KINDS))
def test_building_a_synthesizer_leaves_every_global_rng_alone(tmp_path, monkeypatch, kind):
    """Issue #12: the synthesizer's initial weights come from a generator of its own. The
    global CPU RNG keeps its state, and no global generator (CPU or CUDA) is seeded or set,
    not even and then put back: ``torch.manual_seed`` also reseeds every CUDA generator,
    which a fork of the CPU RNG does not restore (SG runs then lost their BPTT twins'
    dropout masks on a GPU)."""
    r, model = recipe_and_model(tmp_path, KINDS[kind])
    calls = []

    def spy_on(owner, name):
        real = getattr(owner, name)

        def spy(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)

    for name in ("manual_seed", "seed", "set_rng_state"):
        spy_on(torch, name)
    for name in ("manual_seed", "manual_seed_all", "set_rng_state", "set_rng_state_all"):
        spy_on(torch.cuda, name)
    before = torch.get_rng_state()
    boundary, generator = build.build_synthesizer(r, model, torch.device("cpu"), rank=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert calls == []
    assert sum(p.numel() for p in boundary.synthesizer.parameters()) > 0


def _default_init_reference(kind, seed, state_size, hidden):
    """The weights PyTorch's default initialisation draws after ``torch.manual_seed(seed)``:
    what the synthesizers of earlier runs had (their non-zero parameters, in order)."""
    torch.manual_seed(seed)
    if kind == "elementwise-qrnn":
        return [torch.empty(3, hidden).uniform_(-1.0, 1.0)]
    if kind == "elementwise-uniform":  # the cell's weights, then the decoder's re-draw
        return [torch.empty(3, hidden).uniform_(-1.0, 1.0), torch.empty(hidden).uniform_(-0.1, 0.1)]
    if kind == "authors":  # as the evidence-v2 runs built it: three layers, then re-draws
        enc, gates, dec = (
            nn.Linear(1, hidden),
            nn.Linear(2 * hidden, 3 * hidden),
            nn.Linear(hidden, 1),
        )
        nn.init.uniform_(enc.weight, -0.1, 0.1)
        nn.init.uniform_(dec.weight, -0.1, 0.1)
        return [enc.weight, gates.weight, gates.bias, dec.weight]
    if kind in ("elementwise-gru", "elementwise-lstm"):
        cell = nn.GRUCell(1, hidden) if kind == "elementwise-gru" else nn.LSTMCell(1, hidden)
        return list(cell.parameters())
    if kind == "mlp":
        first, second = nn.Linear(state_size, hidden), nn.Linear(hidden, hidden)
        return [*first.parameters(), *second.parameters()]
    return list(nn.Linear(state_size, hidden).parameters())  # conditioned-mlp, one layer


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "linear"])
def test_initial_weights_equal_a_seeded_global_rngs(tmp_path, kind):
    """Published runs drew the synthesizer's weights from the global CPU RNG seeded by
    synthesizer_seed(seed, 0); a CPU generator seeded the same draws the same numbers."""
    r, model = recipe_and_model(tmp_path, KINDS[kind])
    boundary, _ = build.build_synthesizer(r, model, torch.device("cpu"), rank=0)
    synth = boundary.synthesizer
    drawn = [p for p in synth.parameters() if p.abs().sum() > 0]
    state_size = sum(t.shape[1] for t in model.init_state(1))
    seed = build.synthesizer_seed(r.run.seed, 0)
    want = _default_init_reference(kind, seed, state_size, r.synthetic.hidden)
    assert len(drawn) == len(want)
    for got, ref in zip(drawn, want, strict=True):
        assert torch.equal(got.detach(), ref.detach())
    again, _ = build.build_synthesizer(r, model, torch.device("cpu"), rank=1)
    for a, b in zip(synth.parameters(), again.synthesizer.parameters(), strict=True):
        assert torch.equal(a, b)  # the same weights on every rank


def test_noise_generators_are_per_rank_and_on_the_device(tmp_path):
    r, model = recipe_and_model(tmp_path, KINDS["elementwise-qrnn"])
    _, g0 = build.build_synthesizer(r, model, torch.device("cpu"), rank=0)
    _, g1 = build.build_synthesizer(r, model, torch.device("cpu"), rank=1)
    assert g0.device.type == "cpu" and not torch.equal(g0.get_state(), g1.get_state())
    assert g0.initial_seed() == build.synthesizer_seed(r.run.seed, 0)


def test_make_synthesizer_builds_the_authors_synthesizer():
    cfg = recipes.from_dict({"synthetic": {"enabled": True, "synthesizer": "authors"}}).synthetic
    synth = build.make_synthesizer(cfg, 10)
    assert isinstance(synth, AuthorsSynthesizer)
    assert (synth.hidden, synth.window, synth.zoneout, synth.sequence) == (50, 2, 0.1, "scan")
    assert synth.decoder.weight.abs().sum() > 0  # uniform, not zero


class _Printed:
    def __init__(self):
        self.lines = []

    def print(self, line, markup=False):
        self.lines.append(line)


def test_threads_default_to_the_cores_this_process_may_use(monkeypatch):
    """Issue 32: several runs at once each took PyTorch's default thread count."""
    before = torch.get_num_threads()
    monkeypatch.setattr(build.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(build.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    try:
        assert build.set_cpu_threads(0, torch.device("cpu"), _Printed()) == 1
        assert torch.get_num_threads() == 1
        assert build.set_cpu_threads(2, torch.device("cpu"), _Printed()) == 2
    finally:
        torch.set_num_threads(before)


def test_a_busy_machine_is_warned_about(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(build.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(build.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    console = _Printed()
    try:
        build.set_cpu_threads(2, torch.device("cpu"), console)
    finally:
        torch.set_num_threads(before)
    assert len(console.lines) == 1 and console.lines[0].startswith(
        "warning: this machine is busy (load 2.0 on 2 cores, and this run adds 2 threads)"
    )
    assert "run.threads=1" in console.lines[0]


def test_training_and_a_trained_run_read_the_corpus_through_one_call(tmp_path, monkeypatch):
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", run={"epochs": 1})
    r = dataclasses.replace(r, data=dataclasses.replace(r.data, download=False))
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    calls, load = [], data.load_corpus

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return load(*args, **kwargs)

    monkeypatch.setattr(data, "load_corpus", spy)
    trained = build.load_corpus(r)
    split = altgrad_triton.load_run(tmp_path / "runs" / "tiny").split("valid")
    assert len(calls) == 2 and calls[0] == calls[1]
    assert calls[0] == ((r.data.corpus, r.data.path, None), {"download": False})
    assert torch.equal(split, trained.valid)


def test_a_column_of_one_segment_is_warned_about(tmp_path):
    """Columns of 20 tokens (80 tokens over batch 4) with bptt 19: each epoch is one segment."""
    (tmp_path / "c").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "c" / f"{split}.txt").write_text(" ".join(["a b c d"] * 19) + "\n")
    r = tiny_recipe(tmp_path / "c", tmp_path / "runs", bptt={"length": 19})
    console = _Printed()
    build.warn_one_segment(r, 20, console)
    assert console.lines == [
        "warning: bptt.length=19 is not shorter than a training batch column (20 tokens at "
        "data.batch_size=4): each epoch is one segment, so no segment boundary is ever "
        "crossed; lower data.batch_size or bptt.length"
    ]
    build.warn_one_segment(tiny_recipe(tmp_path / "c", tmp_path / "runs"), 20, console)
    assert len(console.lines) == 1  # bptt 8: columns of 20 tokens hold three segments
    console.lines.clear()
    parts = build.build(r, build.ddp.SINGLE, console=console)  # 77 tokens: 19 rows
    assert parts.train_data.shape[0] == 19
    warned = [x for x in console.lines if "bptt.length" in x]
    assert len(warned) == 1 and "(19 tokens at data.batch_size=4)" in warned[0]
