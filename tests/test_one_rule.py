"""One rule per decision (issue #22): which backend runs on which device, whether a corpus is
character-level, how a recipe's corpus is read and which group a ``--versus`` rule pairs with
which. Each rule is checked against its table, and every caller against the rule, so a caller
that decided on its own would fail here."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import subprocess
import sys
import typing

import pytest
import torch

import altgrad_triton
from altgrad_triton import data, report
from altgrad_triton.config import recipe as recipes
from altgrad_triton.config.backends import backend_problem, kernel_backend
from altgrad_triton.config.names import char_level
from altgrad_triton.errors import UserError
from altgrad_triton.report import aggregate, plots, runs
from altgrad_triton.run import build
from altgrad_triton.run.inference import LoadedRun, _usable_backend
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe
from tests.test_report import fake_run

BACKENDS = typing.get_args(typing.get_type_hints(recipes.RunConfig)["backend"])
CELLS = ("qrnn", "lstm")

# ---------------------------------------------------------------------------- backend rule


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


def test_cudnn_leaves_the_other_kernels_on_auto():
    assert [kernel_backend(b) for b in BACKENDS] == [
        "auto" if b == "cudnn" else b for b in BACKENDS
    ]


# ---------------------------------------------------------------------------- char level


def test_char_level_is_the_chars_corpus_for_every_caller():
    for corpus in data.CORPORA:
        want = corpus == "chars"
        assert char_level(corpus) is want
        assert data.corpus_level(corpus) == ("char" if want else "word")
        run = runs.Run(None, "r", "r", None, corpus, [], None)
        assert run.char_level is want
        assert aggregate.Group("g", corpus, [run]).char_level is want
        r = recipes.from_dict({"data": {"corpus": corpus, "path": "x"}})
        assert LoadedRun(None, None, r, None, None, "best", {}).char_level is want


@pytest.mark.parametrize("corpus", ["chars", "text"])
def test_trainer_report_and_inference_agree_a_run_is_character_level(corpus, tmp_path):
    where = tiny_corpus(tmp_path / "data")
    if corpus == "chars":
        where = where / "train.txt"
    r = tiny_recipe(where, tmp_path / "runs", run={"epochs": 1}, data={"corpus": corpus})
    run_dir = tmp_path / "runs" / "tiny"
    Trainer(r, run_dir).fit()
    want = corpus == "chars"
    assert data.load_corpus(corpus, where, None).level == data.corpus_level(corpus)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(("val_bpc" in row) is want for row in rows)
    assert ("best_val_bpc" in json.loads((run_dir / "results.json").read_text())) is want
    assert report.read_run(run_dir).char_level is want
    assert altgrad_triton.load_run(run_dir).char_level is want
    md, _, _ = report.write_report([run_dir], tmp_path / "out", plots=False)
    assert ("best val bpc" in md.read_text()) is want


# ---------------------------------------------------------------------------- corpus loading


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


# ---------------------------------------------------------------------------- --versus pairing


def test_every_table_and_plot_pairs_groups_by_the_one_versus_rule(tmp_path):
    for seed in (1, 2):
        for name in ("a-sg", "a-bptt", "a-dni"):
            modes = ["real", "synthetic"] if name == "a-sg" else None
            fake_run(tmp_path, f"{name}-s{seed}", "ptb", [5.0, 4.0 + seed / 10], modes=modes)
    groups = report.group_runs(report.find_runs([tmp_path]))
    rules = [report.parse_versus(v) for v in ("sg=dni", "sg=bptt", "nothing=a-sg")]
    pairs = [(g.name, b.name) for g, b in aggregate.versus_pairs(groups, rules)]
    assert pairs == [("a-sg", "a-dni"), ("a-sg", "a-bptt")]  # group order, then rule order
    assert {k: b.name for k, b in aggregate.baselines(groups, rules).items()} == {
        ("ptb", "a-sg"): "a-dni"  # the first rule that maps a group wins
    }
    paired = report.paired_table(groups, rules).splitlines()
    assert [row.split(" | ")[:2] for row in paired if row.startswith("| a-")] == [
        ["| a-sg", "a-dni"],
        ["| a-sg", "a-bptt"],
    ]
    phases = report.phase_table(groups, rules).splitlines()
    assert {row.split(" | ")[1] for row in phases if row.startswith("| a-sg | a-")} == {"a-dni"}


def test_the_rules_load_without_torch():
    """recipe validation and altgrad-report / altgrad-suite ask the rules before (or
    without) loading torch: the rules' modules must not import it."""
    code = (
        "import sys, altgrad_triton.config.backends, altgrad_triton.config.names, "
        "altgrad_triton.config.recipe, altgrad_triton.report; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_gap_plots_take_the_same_baseline_as_the_phase_table(tmp_path):
    pytest.importorskip("matplotlib")
    for seed in (1, 2):
        for name in ("a-sg", "a-bptt", "a-dni"):
            fake_run(tmp_path / "runs", f"{name}-s{seed}", "ptb", [5.0, 4.0 + seed / 10])
    groups = report.group_runs(report.find_runs([tmp_path / "runs"]))
    rules = [report.parse_versus(v) for v in ("sg=dni", "sg=bptt")]
    written = plots.plot_gaps(groups, rules, tmp_path / "plots")
    assert [p.name for p in written] == ["ptb--a-sg--vs--a-dni.png"]
