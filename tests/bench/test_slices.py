"""``altgrad-bench --slices`` rows (``bench/slices.py``) for run folders that altgrad-train
itself wrote."""

import json
import shutil

import pytest

from altgrad_triton.bench.slices import slice_row, slice_rows
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe


@pytest.fixture
def trained_run(tmp_path):
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", run={"epochs": 2})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    return tmp_path / "runs" / "tiny"


def test_a_trained_run_gives_its_last_epoch(trained_run):
    rows = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    row = slice_row(trained_run)
    assert (row.family, row.provider, row.dtype) == ("cli-train", "auto", "float32")
    assert row.metric == rows[-1]["tokens_per_s"] and row.unit == "tokens/s"
    assert row.shape == "tiny: 2x16 lstm, text, B=4"
    first, last = rows[0]["train_loss"], rows[-1]["train_loss"]
    verdict = "falls" if last < first else "does NOT fall"
    assert row.note == f"epoch 2 (real); train loss {first:.3f} -> {last:.3f} ({verdict})"


def _copy_as(run, tmp_path, name, backend, tokens_per_s, last_loss):
    """A copy of ``run`` whose recipe says ``backend`` and whose last epoch is edited."""
    dst = tmp_path / name
    shutil.copytree(run, dst)
    text = (dst / "recipe.toml").read_text().replace('backend = "auto"', f'backend = "{backend}"')
    (dst / "recipe.toml").write_text(text)
    rows = [json.loads(x) for x in (dst / "metrics.jsonl").read_text().splitlines()]
    rows[-1].update(tokens_per_s=tokens_per_s, train_loss=last_loss, peak_mem_gib=1.25)
    (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def test_ratio_against_the_triton_run_and_a_loss_that_does_not_fall(trained_run, tmp_path):
    ours = _copy_as(trained_run, tmp_path, "ours", "triton", 3000.0, 1.0)
    cudnn = _copy_as(trained_run, tmp_path, "cudnn", "cudnn", 2000.0, 99.0)
    a, b = slice_rows([ours, cudnn])
    assert a.ratio == 1.0 and b.ratio == 1.5
    assert "does NOT fall" in b.note and b.note.endswith("peak 1.25 GiB")
