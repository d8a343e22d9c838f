"""Using a trained run (``run/inference.py``): load_run, scoring (with and without the cache
pointer), sampling."""

import json
import math
import shutil

import pytest
import torch

import altgrad_triton
from altgrad_triton.core.pointer import PointerSettings
from altgrad_triton.data import EOS, UNK
from altgrad_triton.errors import UserError
from altgrad_triton.run.train import Trainer
from tests.helpers import WORDS, interrupt_at, tiny_corpus, tiny_recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained for two epochs (test batch size 2), and its results."""
    root = tmp_path_factory.mktemp("inference")
    recipe = tiny_recipe(tiny_corpus(root / "data"), root / "runs")
    results = Trainer(recipe, root / "runs" / "tiny").fit()
    return root / "runs" / "tiny", results


def test_load_run_gives_the_model_its_vocabulary_and_recipe(trained):
    run_dir, _ = trained
    rng = torch.get_rng_state()
    run = altgrad_triton.load_run(run_dir)
    assert torch.equal(torch.get_rng_state(), rng)  # building the model drew nothing
    assert not run.model.training and run.checkpoint == "best"
    assert run.recipe.model.hidden_size == 16 and run.recipe.data.corpus == "text"
    assert UNK in run.vocab and set(WORDS) <= set(run.vocab.itos)
    assert run.meta["metrics"]["best"] is True


def test_scores_equal_what_the_trainer_logged(trained):
    run_dir, results = trained
    run = altgrad_triton.load_run(run_dir)
    recipe = run.recipe
    test = run.score(run.split("test"), batch_size=recipe.data.test_batch_size)
    valid = run.score(run.split("valid"), batch_size=recipe.data.eval_batch_size)
    assert test.loss == results["test_loss"]
    assert valid.loss == results["best_val_loss"]
    assert test.ppl == pytest.approx(results["test_ppl"])
    assert test.bptt == recipe.bptt.length and test.tokens == (len(run.split("test")) // 2 - 1) * 2
    # the segment length changes nothing but speed: the state crosses segments exactly
    longer = run.score(run.split("test"), batch_size=2, bptt=50)
    assert longer.loss == pytest.approx(test.loss, rel=1e-6) and longer.bptt == 50


def test_batch_sizes_differ_by_where_the_state_starts_only(trained):
    """Batch 10 is ten contiguous streams, each from a zero state: its loss is the mean of
    the ten streams scored alone at batch 1. Batch 1 on the whole text differs from it
    only by carrying the state across those nine cuts."""
    run = altgrad_triton.load_run(trained[0])
    tokens = run.split("test")
    one, ten = run.score(tokens, batch_size=1), run.score(tokens, batch_size=10)
    assert math.isfinite(one.loss) and math.isfinite(ten.loss) and one.loss != ten.loss
    steps = len(tokens) // 10
    columns = [run.score(tokens[c * steps : (c + 1) * steps]).loss for c in range(10)]
    assert ten.loss == pytest.approx(sum(columns) / 10, rel=1e-6)


def test_a_text_with_unknown_words(trained, tmp_path):
    run = altgrad_triton.load_run(trained[0])
    text = tmp_path / "mine.txt"
    text.write_text("the cat sat on a zebra\nthe zebra ran to quux\n")
    ids, unknown = run.encode_file(text)
    assert unknown == {"zebra": 2, "quux": 1}
    assert ids.tolist().count(run.vocab.stoi[UNK]) == 3 and len(ids) == 13  # with 2 <eos>
    assert math.isfinite(run.score(ids).loss)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty.txt is empty"):
        run.encode_file(tmp_path / "empty.txt")


def test_generation_is_deterministic_per_seed_and_in_the_vocabulary(trained):
    run = altgrad_triton.load_run(trained[0])
    first = list(run.generate(40, seed=1))
    assert first == list(run.generate(40, seed=1))
    assert first != list(run.generate(40, seed=2))
    assert len(first) == 40 and all(w in run.vocab for w in first)
    cold = list(run.generate(40, seed=1, temperature=0.01, prompt="the cat zebra"))
    assert all(w in run.vocab for w in cold)
    ids, unknown = run.encode_prompt("the cat zebra")
    assert unknown == ["zebra"] and run.vocab.decode(ids) == [EOS, "the", "cat", UNK]
    with pytest.raises(UserError, match="prompt: none of its words"):
        run.generate(5, prompt="zebra quux")
    with pytest.raises(UserError, match="temperature: must be >= 0.001"):
        run.generate(5, temperature=0)


def test_pointer_with_lambda_zero_is_plain_evaluation(trained):
    run = altgrad_triton.load_run(trained[0])
    valid = run.split("valid")
    plain = run.score(valid, batch_size=2)
    off = run.score(valid, batch_size=2, pointer=PointerSettings(50, 1.0, 0.0))
    assert off.loss == pytest.approx(plain.loss, rel=1e-7)
    assert off.to_dict()["pointer"] == {"window": 50, "theta": 1.0, "lam": 0.0}


def test_pointer_cache_helps_on_a_text_that_repeats(trained, tmp_path):
    """A passage of random words (which the model cannot predict) read four times: the
    cache holds the passage's own words (and where they came)."""
    run = altgrad_triton.load_run(trained[0])
    gen = torch.Generator().manual_seed(0)
    passage = [WORDS[i] for i in torch.randint(len(WORDS), (120,), generator=gen)]
    (tmp_path / "repeats.txt").write_text(" ".join(passage * 4) + "\n")
    ids, _ = run.encode_file(tmp_path / "repeats.txt")
    plain = run.score(ids)
    cached = run.score(ids, pointer=PointerSettings(window=200, theta=1.0, lam=0.5))
    assert cached.ppl < 0.9 * plain.ppl, (plain.ppl, cached.ppl)


def test_bad_run_directories_and_checkpoints(trained, tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        altgrad_triton.load_run(tmp_path / "nowhere")
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    shutil.rmtree(copy / "checkpoints" / "best")
    with pytest.raises(UserError, match="no 'best' checkpoint; it holds only 'last'"):
        altgrad_triton.load_run(copy)
    assert altgrad_triton.load_run(copy, "last").checkpoint == "last"
    meta = json.loads((copy / "checkpoints/last/meta.json").read_text())
    meta["recipe"]["model"]["hidden_size"] = 24
    (copy / "checkpoints/last/meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="weights do not fit the model"):
        altgrad_triton.load_run(copy, "last")


def test_scores_agree_across_backends(trained):
    """The Triton kernels (under the CPU interpreter here, compiled on a GPU) and the PyTorch
    reference score a checkpoint alike, whichever backend trained it."""
    tokens = altgrad_triton.load_run(trained[0]).split("valid")
    torch_run = altgrad_triton.load_run(trained[0], backend="torch")
    triton_run = altgrad_triton.load_run(trained[0], backend="triton")
    want = torch_run.score(tokens, batch_size=2).loss
    assert triton_run.score(tokens, batch_size=2).loss == pytest.approx(want, rel=1e-5)


def test_a_character_level_run_scores_in_bits_and_samples_characters(tmp_path):
    text = tmp_path / "chars.txt"
    text.write_text("the cat sat on the mat.\nthe dog ran to the tree.\n" * 40)
    recipe = tiny_recipe(
        text, tmp_path / "runs", run={"epochs": 1}, data={"corpus": "chars", "path": str(text)}
    )
    Trainer(recipe, tmp_path / "runs" / "tiny").fit()
    run = altgrad_triton.load_run(tmp_path / "runs" / "tiny")
    assert run.char_level
    (tmp_path / "mine.txt").write_text("the cat!\n")
    ids, unknown = run.encode_file(tmp_path / "mine.txt")
    assert len(ids) == 9 and unknown == {"!": 1}
    score = run.score(ids)
    assert score.bpc == pytest.approx(score.loss / math.log(2))
    assert score.to_dict()["bpc"] == score.bpc
    ids, unknown = run.encode_prompt("the #")
    assert run.vocab.decode(ids) == ["\n", "t", "h", "e", " ", UNK] and unknown == ["#"]
    sample = list(run.generate(30, prompt="the ", seed=5))
    assert sample == list(run.generate(30, prompt="the ", seed=5))
    assert all(len(c) == 1 or c == UNK for c in sample)


def test_cudnn_scores_lstm_runs_only_and_on_cuda():
    from altgrad_triton.run.inference import _usable_backend

    cpu = torch.device("cpu")
    with pytest.raises(UserError, match="backend: 'cudnn' runs LSTM layers, and model.cell"):
        _usable_backend("cudnn", "auto", cpu, "qrnn")
    with pytest.raises(UserError, match="'cudnn' needs a CUDA device"):
        _usable_backend("cudnn", "auto", cpu, "lstm")
    assert _usable_backend(None, "cudnn", cpu, "lstm") == "auto"  # a cuDNN run, scored on CPU


def test_score_shows_progress_only_when_asked(trained, capsys):
    """Issue 32: load_run(...).score() ran 8 minutes with no sign of life. A library prints
    nothing unasked; progress=True is a display on stderr, a function gets (done, total)."""
    run = altgrad_triton.load_run(trained[0])
    tokens = run.split("valid")
    quiet = run.score(tokens, batch_size=2)
    assert capsys.readouterr() == ("", "")
    calls = []
    counted = run.score(tokens, batch_size=2, progress=lambda *a: calls.append(a))
    total = calls[-1][1]
    assert calls == [(i, total) for i in range(1, total + 1)] and total > 1
    shown = run.score(tokens, batch_size=2, progress=True, title="valid")
    out, err = capsys.readouterr()
    assert out == "" and f"valid {total}/{total} loss" in err
    assert quiet.loss == counted.loss == shown.loss


def test_a_run_stopped_inside_its_first_epoch_has_only_last(tmp_path):
    """Issue 32: load_run refused such a run without saying that checkpoint="last" reads
    it, and altgrad-eval showed its checkpoint as ``last (epoch ?)``."""
    recipe = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs")
    stopped = interrupt_at(Trainer(recipe, tmp_path / "runs" / "tiny"), epoch=1, segment=2)
    assert "interrupted at epoch 1, segment 3;" in str(stopped)
    with pytest.raises(UserError) as e:
        altgrad_triton.load_run(tmp_path / "runs" / "tiny")
    assert str(e.value).endswith(
        """no 'best' checkpoint; it holds only 'last' (use checkpoint="last")"""
    )
    run = altgrad_triton.load_run(tmp_path / "runs" / "tiny", checkpoint="last")
    assert run.stopped_inside == (1, 3) and run.epoch is None
    assert run.made == "inside epoch 1, segment 3"


def test_where_an_end_of_epoch_checkpoint_was_made(trained):
    run = altgrad_triton.load_run(trained[0], "last")
    assert run.stopped_inside is None and run.epoch == 2 and run.made == "epoch 2"


def test_generate_has_a_bound_no_real_use_reaches(trained):
    """Issue 32: ``--words 1000000000000`` was accepted (and would run for days)."""
    run = altgrad_triton.load_run(trained[0])
    with pytest.raises(UserError, match=r"^words: must be from 0 to 1,000,000, got 1000001$"):
        run.generate(1_000_001)
    assert len(list(run.generate(3))) == 3


def test_a_damaged_vocabulary_is_blamed_on_meta_json(trained, tmp_path):
    """A meta.json whose vocabulary lost a token, or had one edited: the file is named, not
    the weights (\"do not fit the model\") or the corpus."""
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    meta_file = copy / "checkpoints/best/meta.json"
    meta = json.loads(meta_file.read_text())
    itos = meta["vocab"]["itos"]
    meta["vocab"]["itos"] = itos[:-1]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(UserError) as e:
        altgrad_triton.load_run(copy)
    assert str(e.value).startswith(f"{meta_file}: its vocabulary has {len(itos) - 1} tokens, ")
    meta["vocab"]["itos"] = [*itos[:5], "zzz", *itos[6:]]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(UserError) as e:
        altgrad_triton.load_run(copy).split("test")
    assert f"another vocabulary than {meta_file} (token 5 is 'zzz' there, " in str(e.value)
