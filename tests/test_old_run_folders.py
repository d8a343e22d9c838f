"""A run folder written before the synthesizer keys were renamed resumes where a fresh run ends.

``fixtures/runs-before-synthesizer-keys.tar.gz`` holds two run folders that main wrote at
1da76a2 (``fixtures/make_runs_before_synthesizer_keys.py``), stopped inside epoch 2 of 3:
the authors' synthesizer on a window-2 QRNN (old keys ``synthetic.preset``,
``synthetic.elementwise``, ``synthetic.window``...) and the toolkit's, conditioned (cDNI),
on an LSTM. Each resumes with today's code from its own ``recipe.toml`` and must end where
an uninterrupted run of today's keys ends: the same metrics and weights, to the rounding of
the machine that wrote the fixture (another CPU's vector kernels sum in another order: the
fixture's numbers and this machine's differ from the 7th digit on). Exact resume on one
machine is tests/test_train.py's.
"""

import json
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from altgrad_triton.config import recipe as recipes
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe

FIXTURE = Path(__file__).parent / "fixtures" / "runs-before-synthesizer-keys.tar.gz"
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
