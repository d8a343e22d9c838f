"""What a checkpoint is checked against before it is used (``run/checkpoint/checks.py``):
the recipe and corpus that continue it, this run's tensor shapes, a fine-tuning's recipe,
and the run folder it is read from. Each failure is one line naming the key or the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import altgrad_triton
from altgrad_triton.cli import eval as eval_cli
from altgrad_triton.cli import generate as generate_cli
from altgrad_triton.cli import probe as probe_cli
from altgrad_triton.cli import train as train_cli
from altgrad_triton.data import Vocabulary
from altgrad_triton.errors import UserError
from altgrad_triton.run.checkpoint import checks, layout
from altgrad_triton.run.checkpoint.checkpointer import Checkpointer
from altgrad_triton.run.train import Trainer
from tests.helpers import assert_one_line_error, interrupt_at, tiny_recipe, tree_snapshot
from tests.helpers import run_command as call

SYNTH = {"enabled": True, "synthesizer": "toolkit", "hidden": 6}


# ---------------------------------------------------------------------------- resume


def test_shape_mismatch_names_each_key_that_differs_and_skips_what_was_not_recorded():
    saved = {"model.hidden_size": 16, "model.layers": 2, "model.cell": "lstm"}
    wanted = {"model.hidden_size": 24, "model.layers": 2, "model.cell": "qrnn", "model.window": 2}
    assert checks.shape_mismatch(saved, wanted) == [
        "model.cell: checkpoint 'lstm' vs recipe 'qrnn'",
        "model.hidden_size: checkpoint 16 vs recipe 24",
    ]  # model.window: not recorded by that checkpoint, so not compared
    assert checks.shape_mismatch(saved, {**saved, "model.window": 1}) == []


def test_a_checkpoint_that_does_not_fit_the_recipe_is_one_line(trainer, tmp_path):
    trainer.save("last")
    trainer.save("best")
    data = Path(trainer.recipe.data.path)
    wider = tiny_recipe(data, tmp_path / "runs", synthetic=SYNTH, model={"hidden_size": 24})
    with pytest.raises(UserError) as e:
        Trainer(wider, trainer.run_dir).restore("last")
    assert str(e.value) == (
        "cannot resume: the recipe's model differs from the checkpoint's: "
        "model.hidden_size: checkpoint 16 vs recipe 24"
    )
    with pytest.raises(UserError) as e:
        Checkpointer(trainer.run_dir).load_parent(wider, trainer.parts.corpus.vocab)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"run.parent: {trainer.run_dir}'s model")
    assert message.endswith("model.hidden_size: checkpoint 16 vs recipe 24")


def test_a_vocabulary_difference_is_the_sizes_and_the_first_token_that_differs():
    ours = Vocabulary(["a", "b", "c"])
    assert checks.vocab_difference(Vocabulary(["a", "x", "c"]), ours) == (
        "token 1 is 'x' there, 'b' in the corpus"
    )
    assert checks.vocab_difference(Vocabulary(["a", "b"]), ours) == (
        "2 tokens there, 3 in the corpus"
    )
    assert checks.vocab_difference(Vocabulary(["a", "y"]), ours) == (
        "2 tokens there, 3 in the corpus; token 1 is 'y' there, 'b' in the corpus"
    )


def test_a_corpus_of_another_vocabulary_cannot_resume_a_checkpoint(trainer):
    trainer.save("last")
    ckpt = trainer.checkpoints.load("last")
    vocab = trainer.parts.corpus.vocab
    checks.check_resumable(ckpt, trainer.recipe, vocab)  # its own corpus: fine
    itos = list(vocab.itos)
    itos[2] = "zebra"
    with pytest.raises(UserError) as e:
        checks.check_resumable(ckpt, trainer.recipe, Vocabulary(itos))
    message = str(e.value)
    assert "\n" not in message and message.startswith(
        f"cannot resume: the corpus at data.path={trainer.recipe.data.path!r} has another "
        f"vocabulary than {ckpt.where / layout.META} (token 2 is {vocab.itos[2]!r} there, "
        "'zebra' in the corpus); point data.path at the text the run was trained on"
    )


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda itos: "garbage", "meta.json: vocabulary: expected a mapping"),
        (lambda itos: {"itos": [itos[1], *itos[1:]]}, "appears twice in the vocabulary"),
        (lambda itos: {"itos": itos[:-1]}, "its vocabulary has"),
        (lambda itos: {"itos": [*itos[:5], "zzz", *itos[6:]]}, "(token 5 is 'zzz' there, "),
    ],
)
def test_resume_names_a_damaged_meta_json_not_the_corpus(trainer, damage, says):
    """Issue 32: a damaged vocabulary in meta.json was blamed on the corpus ("the corpus at
    data.path=... has another vocabulary") on --resume, where altgrad-eval names the file."""
    import json

    trainer.save("last")
    meta_file = trainer.checkpoints.path("last") / layout.META
    meta = json.loads(meta_file.read_text())
    meta["vocab"] = damage(meta["vocab"]["itos"])
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(UserError) as e:
        Trainer(trainer.recipe, trainer.run_dir).restore("last")
    message = str(e.value)
    assert str(meta_file) in message and says in message and "\n" not in message, message


def test_a_checkpoint_of_another_batch_size_cannot_resume_inside_its_epoch(trainer, tmp_path):
    trainer.save("last")  # stopped inside epoch 3 with 4 carried rows
    ckpt = trainer.checkpoints.load("last")
    other = tiny_recipe(
        Path(trainer.recipe.data.path), tmp_path / "runs", synthetic=SYNTH, data={"batch_size": 2}
    )
    with pytest.raises(UserError, match=r"^cannot resume: data.batch_size=2, but the checkpoint "
                       r"stopped inside epoch 3 with batch size 4; resume with "
                       r"data.batch_size=4$"):  # fmt: skip
        checks.check_resumable(ckpt, other, trainer.parts.corpus.vocab)


@pytest.mark.parametrize(
    "change, says",
    [
        ({"run": {"seed": 7}}, "run.seed=7, but the checkpoint stopped inside epoch 1, whose "
         "segments were cut with run.seed=42; resume with run.seed=42"),
        ({"bptt": {"length": 6}}, "bptt.length=6, but the checkpoint stopped inside epoch 1, "
         "whose segments were cut with bptt.length=8; resume with bptt.length=8"),
    ],
    ids=["seed", "bptt-length"],
)  # fmt: skip
def test_a_resume_inside_an_epoch_refuses_to_cut_it_differently(corpus_dir, tmp_path, change, says):
    r = tiny_recipe(corpus_dir, tmp_path, run={"max_batches": 5})
    interrupt_at(Trainer(r, tmp_path / "tiny"), epoch=1, segment=2)
    sections = {**change, "run": {"max_batches": 5, **change.get("run", {})}}
    other = tiny_recipe(corpus_dir, tmp_path, **sections)
    with pytest.raises(UserError) as e:
        Trainer(other, tmp_path / "tiny").restore("last")
    assert str(e.value).startswith(f"cannot resume: {says}")
    at_the_boundary = tiny_recipe(corpus_dir, tmp_path / "b", run={"max_batches": 5, "epochs": 1})
    Trainer(at_the_boundary, tmp_path / "b" / "tiny").fit()
    Trainer(other, tmp_path / "b" / "tiny").restore("last")  # fine between epochs


# ---------------------------------------------------------------------------- tensor shapes


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.pt"])
def test_files_from_a_model_of_another_size_are_one_line_naming_the_file_and_tensor(
    finished, corpus_dir, tmp_path, name
):
    r, run = finished
    wider = tiny_recipe(
        corpus_dir, tmp_path / "w", run={"max_batches": 5, "epochs": 1}, model={"hidden_size": 24}
    )
    Trainer(wider, tmp_path / "w" / "tiny").fit()
    shutil.copy(tmp_path / "w" / "tiny" / "checkpoints" / "last" / name, run / "checkpoints/last")
    with pytest.raises(UserError) as e:
        Trainer(r, run).restore("last")
    assert str(e.value).startswith(f"{run / 'checkpoints' / 'last' / name}: ")
    assert str(e.value).endswith("the file is from a model of another size")
    first = "'layers.0.w_ih' has shape [96, 16], this run's has [64, 16]"
    if name == "trainer.pt":
        first = "optimizer state 'exp_avg' of 'layers.0.w_ih' has shape [96, 16], the "
        first += "parameter's is [64, 16]"
    assert first in str(e.value)


def test_finetune_from_a_model_file_of_another_size_is_one_line(tmp_path):
    """Issue 32: the parent's model.safetensors replaced by another run's (its meta.json
    kept) gave PyTorch's 'size mismatch for decoder.weight' traceback."""
    import shutil

    from altgrad_triton.cli.train import finetune_recipe
    from altgrad_triton.errors import UserError
    from altgrad_triton.run.train import Trainer
    from tests.helpers import trained_tiny_run

    parent = trained_tiny_run(tmp_path / "a")
    other = trained_tiny_run(tmp_path / "b", model={"hidden_size": 24, "emb_size": 24})
    best = parent / "checkpoints" / "best" / "model.safetensors"
    shutil.copy(other / "checkpoints" / "best" / "model.safetensors", best)
    recipe = finetune_recipe(
        parent, [f"run.out_dir={tmp_path / 'ft'}", "optim.name=nt-asgd", "optim.lr=1"]
    )
    trainer = Trainer(recipe, tmp_path / "ft" / recipe.run.name)
    with pytest.raises(UserError, match=r"do not fit the model its recipe describes \(size "
                       r"mismatch for .*\)$"):  # fmt: skip
        trainer.fit()


# ---------------------------------------------------------------------------- run folder


def test_a_folder_without_a_recipe_is_not_checked_and_a_vocabulary_must_fit_the_model(
    trainer, tmp_path
):
    trainer.save("last")
    ckpt = trainer.checkpoints.load("last")
    checks.check_run_folder(ckpt, tmp_path / "checkpoints-alone")  # no recipe.toml there
    raw = ckpt.meta["vocab"]
    assert checks.vocabulary_of(raw, ckpt, ckpt.where) == trainer.parts.corpus.vocab
    short = {"itos": raw["itos"][:-2]}
    with pytest.raises(UserError) as e:
        checks.vocabulary_of(short, ckpt, ckpt.where)
    rows = len(raw["itos"])
    assert str(e.value) == (
        f"{ckpt.where / layout.META}: its vocabulary has {rows - 2:,} tokens, the model in "
        f"{ckpt.where / layout.MODEL} {rows:,}; the file is damaged (put the run's own "
        "meta.json back)"
    )


def test_a_meta_json_without_vocab_names_the_key_and_the_file(trained, tmp_path):
    from altgrad_triton import load_run

    copy = tmp_path / "tiny"
    shutil.copytree(trained, copy)
    meta = copy / "checkpoints" / "best" / "meta.json"
    data = json.loads(meta.read_text())
    del data["vocab"]
    meta.write_text(json.dumps(data))
    with pytest.raises(UserError) as e:
        load_run(copy)
    assert str(e.value).startswith(
        f"{copy / 'checkpoints' / 'best'}/meta.json: lacks the key 'vocab'"
    )


def test_checkpoints_swapped_in_from_another_run_are_one_line_from_every_reader(
    run_dir, tmp_path, capsys
):
    """Issue 32: run K's folder with run L's (wider) checkpoints copied in. A resume refuses
    it naming the key; eval, generate, probe, load_run and a fine-tuning used L's model
    while K's recipe.toml described another. Now each refuses by the resume's rule."""
    wider = tiny_recipe(
        run_dir.parent.parent / "data",
        tmp_path / "runs",
        run={"name": "wide", "epochs": 1, "max_batches": 4, "max_eval_batches": 2},
        model={"hidden_size": 24},
    )
    Trainer(wider, tmp_path / "runs" / "wide").fit()
    k = tmp_path / "k"
    shutil.copytree(run_dir, k)
    shutil.rmtree(k / "checkpoints")
    shutil.copytree(tmp_path / "runs" / "wide" / "checkpoints", k / "checkpoints")
    (tmp_path / "f.txt").write_text("the cat sat on a mat\n")
    says = (
        f"{k / 'checkpoints' / 'best'}: not this run's checkpoint: its model differs from "
        f"{k / 'recipe.toml'}'s: model.hidden_size: checkpoint 24 vs recipe 16"
    )
    assert_one_line_error(call(eval_cli.main, capsys, k, "--text", tmp_path / "f.txt"), says)
    assert_one_line_error(call(eval_cli.main, capsys, k, "--json"), says)
    assert_one_line_error(call(generate_cli.main, capsys, k, "--words", 3), says)
    assert_one_line_error(call(probe_cli.main, capsys, k), says)
    last = says.replace("best", "last")
    assert_one_line_error(call(generate_cli.main, capsys, k, "--checkpoint", "last"), last)
    with pytest.raises(UserError) as e:
        altgrad_triton.load_run(k)
    assert str(e.value).startswith(says) and str(e.value).endswith(
        "put the run's own checkpoints back, or use the run folder these came from"
    )
    ft = [f"run.out_dir={tmp_path / 'ft'}", "optim.name=nt-asgd", "run.device=cpu"]
    assert_one_line_error(call(train_cli.main, capsys, "--finetune", k, *ft), says)
    code, _, err = call(train_cli.main, capsys, "--resume", k, "run.epochs=3")
    assert code == 2 and "model.hidden_size: checkpoint 24 vs recipe 16" in err


@pytest.mark.parametrize("damage", ["another run's", "corrupt"])
def test_a_resume_from_last_refuses_a_best_that_is_not_the_runs(damage, corpus_dir, tmp_path):
    """A resume would have replaced that best/ at its next best epoch, without a word."""
    run = {"max_batches": 4, "max_eval_batches": 2, "epochs": 1}
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run=run)
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    best = tmp_path / "runs" / "tiny" / "checkpoints" / "best"
    if damage == "corrupt":
        (best / "model.safetensors").write_bytes(b"\0" * 100)
        why = "checkpoint is corrupt or incomplete"
    else:
        other = tiny_recipe(corpus_dir, tmp_path / "o", run=run, model={"hidden_size": 24})
        Trainer(other, tmp_path / "o" / "tiny").fit()
        shutil.rmtree(best)
        shutil.copytree(tmp_path / "o" / "tiny" / "checkpoints" / "best", best)
        why = "model.hidden_size: checkpoint 24 vs recipe 16"
    before = tree_snapshot(best)
    resumed = Trainer(
        tiny_recipe(corpus_dir, tmp_path / "runs", run={**run, "epochs": 3}), best.parents[1]
    )
    with pytest.raises(UserError) as e:
        resumed.restore("last")
    assert f"cannot resume: {best} is not this run's best checkpoint (" in str(e.value)
    assert why in str(e.value) and "move it out of the run folder" in str(e.value)
    assert tree_snapshot(best) == before
