"""Names (``config/names.py``): whether a corpus is character-level, for every caller that
asks (the trainer, the report, inference), and a run name's seed suffix."""

from __future__ import annotations

import json

import pytest

import altgrad_triton
from altgrad_triton import data, report
from altgrad_triton.config import recipe as recipes
from altgrad_triton.config.names import char_level
from altgrad_triton.report import aggregate, runs
from altgrad_triton.run.inference import LoadedRun
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe

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


# ---------------------------------------------------------------------------- seeds


def test_split_seed_and_back():
    assert report.split_seed("wt2-bptt-t10-s3") == ("wt2-bptt-t10", 3)
    assert report.split_seed("plain") == ("plain", None)
    assert report.split_seed("a-s") == ("a-s", None)
    assert report.split_seed(report.seeded_name("x-sg", 12)) == ("x-sg", 12)
