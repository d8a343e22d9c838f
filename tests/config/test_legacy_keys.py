"""Recipes, overrides and run folders written before the synthesizer keys were renamed
(``config/legacy_keys.py``): the old keys give today's recipe with a one-line note, an old
checkpoint's model shape reads in today's keys, and an old run folder resumes where a fresh
run ends.

``fixtures/runs-before-synthesizer-keys.tar.gz`` holds two run folders that main wrote at
1da76a2 (``fixtures/make_runs_before_synthesizer_keys.py``), stopped inside epoch 2 of 3:
the authors' synthesizer on a window-2 QRNN (old keys ``synthetic.preset``,
``synthetic.elementwise``, ``synthetic.window``...) and the toolkit's, conditioned (cDNI),
on an LSTM. Each resumes with today's code from its own ``recipe.toml`` and must end where
an uninterrupted run of today's keys ends: the same metrics and weights, to the rounding of
the machine that wrote the fixture (another CPU's vector kernels sum in another order: the
fixture's numbers and this machine's differ from the 7th digit on). Exact resume on one
machine is tests/run/test_train.py's.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from altgrad_triton.config import legacy_keys
from altgrad_triton.config import recipe as recipes
from altgrad_triton.errors import UserError
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe

FIXTURE = Path(__file__).parents[1] / "fixtures" / "runs-before-synthesizer-keys.tar.gz"
ROOT = Path(__file__).resolve().parents[2]
ALT = {"start": "real", "switch_epochs": [2], "switch_at_restarts": True}
RESTARTS = {"kind": "cosine_restarts", "periods": [1, 2]}
TODAY = {  # the fixture's runs in today's keys
    "authors": (
        {"enabled": True, "synthesizer": "authors", "hidden": 4, "alternation": ALT},
        {"cell": "qrnn", "window": 2, "layers": 2, "emb_size": 8, "hidden_size": 8},
    ),
    "toolkit-cdni": (
        {
            "enabled": True,
            "synthesizer": "toolkit",
            "hidden": 4,
            "context_tokens": 2,
            "alternation": ALT,
        },
        {"cell": "lstm", "layers": 2, "emb_size": 8, "hidden_size": 8},
    ),
}

OLD_SPELLINGS = [
    # (old [synthetic] keys, the same recipe in today's keys)
    ({"preset": "authors"}, {"synthesizer": "authors"}),
    ({"synthesizer": "elementwise"}, {"synthesizer": "toolkit"}),
    ({"synthesizer": "elementwise", "elementwise": "toolkit", "preset": "none"}, {}),
    (
        {"synthesizer": "elementwise", "elementwise": "authors", "dropout": 0.0},
        {
            "synthesizer": "authors",
            "dropout": 0.0,
            "authors": {"defaults": False, "sequence": "element", "window": 1, "zoneout": 0.0},
        },
    ),
    (
        {"preset": "authors", "window": 1, "sequence": "element"},
        {"synthesizer": "authors", "authors": {"window": 1, "sequence": "element"}},
    ),
    ({"synthesizer": "mlp", "elementwise": "toolkit", "window": 1}, {"synthesizer": "mlp"}),
]


def close(rows: list[dict], others: list[dict]) -> bool:
    """The same rows: the same keys and values, floats to a relative 1e-5 (or 1e-6 absolute,
    for cosines near 0)."""

    def same(a, b):
        return a == pytest.approx(b, rel=1e-5, abs=1e-6) if isinstance(a, float) else a == b

    return len(rows) == len(others) and all(
        r.keys() == o.keys() and all(same(r[k], o[k]) for k in r)
        for r, o in zip(rows, others, strict=True)
    )


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # wall-clock fields differ between runs
        r.pop("seconds")
        r.pop("tokens_per_s")
    return rows


def weights(run_dir: Path) -> dict:
    last = run_dir / "checkpoints" / "last"
    return {f: load_file(last / f) for f in ("model.safetensors", "synthesizer.safetensors")}


def write(tmp_path, text, name="r.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("old, new", OLD_SPELLINGS)
def test_the_old_synthesizer_keys_give_the_same_recipe_with_a_note(old, new, capsys):
    was = recipes.from_dict({"synthetic": {"enabled": True, **old}})
    note = capsys.readouterr().err
    assert was == recipes.from_dict({"synthetic": {"enabled": True, **new}})
    assert note.count("\n") == 1 and note.startswith("note: synthetic.")
    assert "is now spelled synthetic.synthesizer = " in note
    assert not capsys.readouterr().err  # today's keys: no note


def test_old_synthesizer_keys_work_as_overrides_and_in_shipped_bases(tmp_path, capsys):
    for paper in ("wt2.toml", "ptb.toml"):
        s = recipes.load(ROOT / "recipes" / paper, ["synthetic.preset=authors"]).synthetic
        assert (s.synthesizer, s.authors.sequence, s.reduction) == ("authors", "scan", "sum")
    assert "synthetic.preset = 'authors' is now spelled" in capsys.readouterr().err
    with pytest.raises(UserError, match="synthetic.preset: must be one of"):
        recipes.load(write(tmp_path, '[synthetic]\npreset = "mine"\n'))
    with pytest.raises(UserError, match="synthetic.preset = 'authors' with the mlp synthesizer"):
        recipes.load(write(tmp_path, '[synthetic]\npreset = "authors"\nsynthesizer = "mlp"\n'))
    with pytest.raises(UserError, match="synthetic.window: only the authors' synthesizer"):
        recipes.load(write(tmp_path, "[synthetic]\nwindow = 2\n"))


def test_old_checkpoint_shapes_read_in_todays_keys():
    old = {"synthetic.synthesizer": "elementwise", "synthetic.elementwise": "authors"}
    old["synthetic.window"] = 2
    assert legacy_keys.migrate_shape(old) == {
        "synthetic.synthesizer": "authors",
        "synthetic.authors.window": 2,
    }
    mlp = {
        "synthetic.synthesizer": "mlp",
        "synthetic.elementwise": "toolkit",
        "synthetic.window": 1,
    }
    assert legacy_keys.migrate_shape(mlp) == {"synthetic.synthesizer": "mlp"}


@pytest.mark.parametrize("name", list(TODAY))
def test_an_old_run_folder_resumes_exactly(tmp_path, name, capsys):
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path / "old", filter="data")
    data = tiny_corpus(tmp_path / "data")  # the corpus the folders were trained on (seed 0)
    old = tmp_path / "old" / name
    assert [row["epoch"] for row in metrics(old)] == [1]  # stopped inside epoch 2

    # as `altgrad-train --resume OLD data.path=... run.out_dir=...` does
    moved = [f"data.path={data}", f"run.out_dir={old.parent}"]
    recipe = recipes.load(old / "recipe.toml", moved)
    note = capsys.readouterr().err
    assert "synthetic.elementwise" in note and "is now spelled synthetic.synthesizer" in note
    resumed = Trainer(recipe, old)
    resumed.restore("last")
    assert resumed.run_state.epoch == 2 and resumed.run_state.sums.segment > 0
    resumed.fit()

    synth, model = TODAY[name]
    straight = tiny_recipe(
        data,
        tmp_path / "new",
        run={"name": name, "epochs": 3},
        synthetic=synth,
        model=model,
        schedule=RESTARTS,
    )
    assert straight.synthetic == recipe.synthetic  # the old keys read as today's
    Trainer(straight, tmp_path / "new" / name).fit()
    assert close(metrics(old), metrics(tmp_path / "new" / name))
    for file, saved in weights(old).items():
        fresh = weights(tmp_path / "new" / name)[file]
        assert saved.keys() == fresh.keys(), file
        for k in saved:
            torch.testing.assert_close(saved[k], fresh[k], rtol=1e-5, atol=1e-6, msg=file)
