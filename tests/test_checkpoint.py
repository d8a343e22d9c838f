"""The Checkpointer: the typed checkpoint survives a save and a load unchanged, trainer.pt
keeps its historical flat keys, ``find`` picks the complete folder, a restore puts every
part back, and a checkpoint that does not fit a recipe is one line."""

from __future__ import annotations

import math
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from altgrad_triton.errors import UserError
from altgrad_triton.run.checkpoint import layout
from altgrad_triton.run.checkpoint.checkpointer import Checkpointer
from altgrad_triton.run.checkpoint.contents import TrainerState
from altgrad_triton.run.metrics import EpochSums
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_corpus, tiny_recipe

SYNTH = {"enabled": True, "synthesizer": "toolkit", "hidden": 6}
OLD_RUNS = Path(__file__).parent / "fixtures" / "runs-before-synthesizer-keys.tar.gz"

TRAINER_PT_KEYS = [  # trainer.pt's keys, in the order every version so far wrote them
    "epoch",
    "best_val",
    "sums",
    "state",
    "val_losses",
    "averaging_since",
    "lowest_sg_loss",
    "weights",
    "carry",
    "optimizer",
    "synth_optimizer",
    "rng",
    "cuda_rng",
    "synth_rng",
    "world_size",
    "rank_rng",
    "kernel_configs",
    "kernel_records",
]


@pytest.fixture
def trainer(tmp_path):
    """A built (untrained) run with a synthesizer, its position set to distinctive values."""
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", synthetic=SYNTH)
    t = Trainer(r, tmp_path / "runs" / "tiny")
    run = t.run_state
    run.epoch, run.best_val, run.val_losses = 3, 1.25, [2.0, 1.25]
    run.sums = EpochSums(segment=4, tokens=128, loss=9.5)
    run.carried = tuple(torch.randn_like(s) for s in t.parts.model.init_state(4))
    t.log.lowest_sg_loss = 0.5
    with torch.no_grad():  # weights no fresh build has
        for p in t.parts.model.parameters():
            p.add_(1.0)
    return t


def test_the_typed_checkpoint_round_trips_through_the_folder(trainer):
    cp = trainer.checkpoints
    trainer.save("last", {"epoch": 2})
    rng_at_save = torch.get_rng_state()
    saved = cp.load("last")
    run = saved.trainer.run
    assert (run.epoch, run.best_val, run.val_losses) == (3, 1.25, [2.0, 1.25])
    assert (run.sums.segment, run.sums.tokens, run.sums.loss) == (4, 128, 9.5)
    assert all(
        torch.equal(a, b) for a, b in zip(run.carried, trainer.run_state.carried, strict=True)
    )
    assert saved.trainer.log == {"lowest_sg_loss": 0.5}
    assert torch.equal(saved.trainer.rng.cpu, rng_at_save)
    model = trainer.parts.model.state_dict()
    assert saved.weights.keys() == model.keys()
    assert all(torch.equal(saved.weights[k], model[k]) for k in model)
    b = trainer.parts.boundary
    assert saved.synthesizer.keys() == b.synthesizer.state_dict().keys()
    assert saved.trainer.synth_optimizer == b.optimizer.state_dict()
    assert saved.meta["epoch"] == 3 and saved.meta["metrics"] == {"epoch": 2}
    assert saved.where == cp.path("last") and saved.training_weights is saved.weights
    # written again from what was read: the same flat dict, key for key, in the same order
    flat = torch.load(cp.path("last") / layout.TRAINER, weights_only=False)
    assert list(flat) == TRAINER_PT_KEYS
    again = saved.trainer.to_dict()
    assert list(again) == TRAINER_PT_KEYS and again["sums"] == flat["sums"]


def test_a_restore_puts_every_part_back(trainer):
    trainer.save("last")
    synth_stream = trainer.parts.synth_generator.get_state()
    expected = torch.rand(3)  # what the saved CPU stream draws next
    fresh = Trainer(trainer.recipe, trainer.run_dir)
    fresh.restore("last")
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(fresh.parts.synth_generator.get_state(), synth_stream)
    run = fresh.run_state
    assert (run.epoch, run.best_val, run.sums.segment) == (3, 1.25, 4)
    assert all(
        torch.equal(a, b) for a, b in zip(run.carried, trainer.run_state.carried, strict=True)
    )
    assert fresh.log.lowest_sg_loss == 0.5
    ours = fresh.parts.model.state_dict()
    for name, tensor in trainer.parts.model.state_dict().items():
        assert torch.equal(ours[name], tensor), name


def test_an_old_run_folders_trainer_state_reads_back_key_for_key(tmp_path):
    """A trainer.pt written by an earlier version: reading it into the typed object and
    writing that out again loses nothing and changes nothing."""
    with tarfile.open(OLD_RUNS) as tar:
        tar.extractall(tmp_path, filter="data")
    for path in sorted(tmp_path.glob("*/checkpoints/*/trainer.pt")):
        flat = torch.load(path, weights_only=False)
        again = TrainerState.from_dict(flat).to_dict()
        assert set(flat) <= set(again), path
        for key, value in flat.items():
            assert _same(again[key], value), (path, key)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def _complete(folder: Path, epoch: int) -> None:
    folder.mkdir(parents=True)
    (folder / layout.META).write_text(f'{{"epoch": {epoch}, "model_shape": {{}}}}')


def test_find_prefers_the_complete_checkpoint_then_the_one_set_aside(tmp_path):
    cp = Checkpointer(tmp_path)
    last = cp.path("last")
    assert cp.find("last") is None
    layout.staging(last).mkdir(parents=True)  # a save being written is never found
    _complete(layout.staging(last) / "x", 1)
    (layout.staging(last) / layout.META).write_text("{}")
    assert cp.find("last") is None
    _complete(layout.set_aside(last), 1)  # cut off between the renames: the old one
    assert cp.find("last") == layout.set_aside(last)
    last.mkdir()  # a folder without meta.json is not complete
    assert cp.find("last") == layout.set_aside(last)
    (last / layout.META).write_text("{}")
    assert cp.find("last") == last and cp.find("best") is None
    assert set(layout.ENTRIES) == {
        f"{p}{t}{s}" for t in layout.TAGS for p, s in (("", ""), (".", ".tmp"), (".", ".old"))
    }


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


def test_load_model_names_what_is_missing(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint: must be one of best, last, got 'first'"):
        Checkpointer(tmp_path).load_model("first")
    with pytest.raises(UserError, match=r"not a run directory \(no checkpoints/ in it\)"):
        Checkpointer(tmp_path).load_model("best")
    _complete(layout.directory(tmp_path, "last"), 2)
    with pytest.raises(UserError, match=r"no 'best' checkpoint; it holds only 'last'"):
        Checkpointer(tmp_path).load_model("best")


def test_the_layout_and_the_run_folder_import_no_torch():
    """altgrad-suite decides a run's status through rundir.py, which reads the checkpoint
    layout: neither may pull in torch (the checkpoint package imports it lazily)."""
    code = (
        "import sys\n"
        "from altgrad_triton import rundir\n"
        "from altgrad_triton.run.checkpoint import layout\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


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
