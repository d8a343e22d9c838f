"""The checkpoint (``run/checkpoint/``): the typed checkpoint survives a save and a load
unchanged, trainer.pt keeps its historical flat keys, ``find`` picks the complete folder, a
restore puts every part back, damaged files are one line, and a save never replaces a
folder it did not write."""

from __future__ import annotations

import math
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from altgrad_triton.cli import train as train_cli
from altgrad_triton.errors import UserError
from altgrad_triton.run.checkpoint import layout
from altgrad_triton.run.checkpoint.checkpointer import Checkpointer
from altgrad_triton.run.checkpoint.contents import TrainerState
from altgrad_triton.run.train import Trainer
from tests.helpers import (
    TINY_RUN,
    one_error_line,
    run_command,
    tiny_recipe,
    tree_snapshot,
)

OLD_RUNS = Path(__file__).parents[1] / "fixtures" / "runs-before-synthesizer-keys.tar.gz"
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
    "text, says",
    [
        ("[1, 2]", "meta.json: expected a JSON object with model_shape, got list"),
        ('{"epoch": 2}', "meta.json: lacks 'model_shape'"),
    ],
    ids=["not-an-object", "no-model-shape"],
)
def test_a_wrongly_shaped_meta_json_is_one_line_naming_it(finished, text, says):
    r, run = finished
    (run / "checkpoints" / "last" / "meta.json").write_text(text)
    with pytest.raises(UserError, match="checkpoint is corrupt or incomplete") as e:
        Trainer(r, run).restore("last")
    assert says in str(e.value)


def test_a_trainer_state_that_is_not_one_is_one_line_naming_it(finished):
    r, run = finished
    torch.save([1, 2], run / "checkpoints" / "last" / "trainer.pt")
    with pytest.raises(UserError, match=r"trainer.pt: holds a list, not a dict"):
        Trainer(r, run).restore("last")


def test_a_save_never_replaces_a_folder_it_did_not_write(run_a, capsys):
    """What a run made inside A's best checkpoint (before this was refused) left there: A's
    resume refuses before training, and a save refuses, deleting nothing."""
    a, _ = run_a
    best = a / "checkpoints" / "best"
    (best / "recipe.toml").write_text('[run]\nname = "best"\n')
    (best / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (best / "checkpoints" / "last").mkdir(parents=True)
    (best / "checkpoints" / "last" / layout.META).write_text("{}")
    before = tree_snapshot(a)
    code, _, err = run_command(train_cli.main, capsys, "--resume", a, "run.epochs=2")
    line = one_error_line(code, err)
    assert line.startswith(f"error: {best}: not only a checkpoint: it also holds 'checkpoints'")
    assert tree_snapshot(a) == before
    # the store's own check, for a save that gets there anyway
    for name in ("recipe.toml", "metrics.jsonl", "checkpoints"):
        (best / name).rename(a.parent / name)  # what the user does: moves them out
    trainer = Trainer(
        tiny_recipe(a.parent.parent / "data", a.parent, run={**TINY_RUN, "name": "A"}), a
    )
    for tag in ("best", ".last.old", ".best.tmp"):
        (a / "checkpoints" / tag).mkdir(exist_ok=True)
        (a / "checkpoints" / tag / "notes.txt").write_text("mine")
        before = tree_snapshot(a)
        with pytest.raises(UserError) as e:
            trainer.save("last" if tag == ".last.old" else "best")
        assert str(e.value).startswith(
            f"{a / 'checkpoints' / tag}: not only a checkpoint: it also holds 'notes.txt'"
        )
        assert str(e.value).endswith(f"then continue with --resume {a}")
        assert tree_snapshot(a) == before, tag
        (a / "checkpoints" / tag / "notes.txt").unlink()
    (a / "checkpoints" / "last").rename(a / "elsewhere")
    (a / "checkpoints" / "last").symlink_to(a / "elsewhere")
    with pytest.raises(UserError, match=r"checkpoints/last: a symbolic link, not a checkpoint"):
        trainer.save("last")
    assert (a / "elsewhere" / layout.META).is_file()
    (a / "checkpoints" / "last").unlink()
    trainer.save("last")  # ours again: saved as ever
    trainer.save("best")
    assert layout.foreign(a / "checkpoints" / "best") is None
