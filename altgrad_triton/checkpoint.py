"""Checkpoints: safetensors weights, a JSON sidecar, and the trainer state; written atomically.

A checkpoint is a directory ``<run>/checkpoints/<tag>/`` holding

* ``model.safetensors`` and (with synthetic gradients) ``synthesizer.safetensors``;
* ``meta.json``: the resolved recipe, the model-shape keys, epoch, metrics, vocabulary
  (:func:`meta`);
* ``trainer.pt``: where the run stands (:class:`RunState`: next epoch, best validation
  loss, the in-epoch sums and carried state, NT-ASGD's validation history and switch), the
  synthesizer's carry, the optimizer states and every RNG stream, per rank under torchrun
  (:func:`trainer_state`), so a resumed run continues exactly, even from an interrupted
  epoch (:func:`restore_trainer`, after :func:`check_resumable`).

With NT-ASGD averaging, ``model.safetensors`` holds the averaged weights: they are the model
(validated, tested, loaded by ``load_run``, fine-tuned from), so every reader of the model
file gets them without knowing about the optimizer. The training iterate, which only a
resume needs, goes into ``trainer.pt`` under ``weights`` (the averages are also in the
ASGD state there, as ``ax``: one model's worth of duplication, for a model file that means
one thing).

It is written into a hidden temporary directory and renamed into place; the previous
checkpoint of the same tag is renamed aside first and deleted last, so a crash at any
moment leaves either the old or the new checkpoint complete (``load`` finds either). A
save that fails (a full disk) deletes its temporary directory and raises an OSError naming
the file; the previous checkpoint stays as it was.

What is read back is checked before it is used: ``load`` that each file is what it claims
(``meta.json`` an object with ``model_shape``, ``trainer.pt`` a dict with the trainer's
keys), ``check_resumable`` that the recipe can continue the run, and ``check_shapes`` that
every saved tensor has the shape of this run's (files copied from a run of another size
are one line naming the file and the first tensor that differs).

``trainer.pt`` is one flat dict whose keys have not changed since checkpoints gained a
synthesizer RNG stream; keys added later are optional when reading, so older checkpoints
still resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors.torch import load_file

from . import asgd, legacy_keys
from . import distributed as ddp
from .build import Components
from .carry import State, to_device
from .data import Vocabulary
from .errors import UserError, one_line
from .files import read_json, write_file
from .kernels import tuning
from .metrics import EpochSums, MetricsLog
from .recipe import Recipe, model_shape, to_dict
from .rundir import find_checkpoint as find

TRAINER_KEYS = (
    "epoch",
    "best_val",
    "sums",
    "state",
    "carry",
    "optimizer",
    "synth_optimizer",
    "rng",
    "cuda_rng",
)
"""The keys of ``trainer.pt`` every checkpoint has had; those added later are optional."""


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Tied weights share storage; safetensors refuses shared tensors, so store clones.
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def save(
    directory: Path,
    *,
    model: torch.nn.Module,
    synthesizer: torch.nn.Module | None,
    meta: dict[str, Any],
    trainer_state: dict[str, Any],
) -> None:
    """Write a complete checkpoint to ``directory`` atomically (see the module docstring)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp"
    old = directory.parent / f".{directory.name}.old"
    if not directory.exists() and (old / "meta.json").exists():
        os.replace(old, directory)  # a save cut off between its renames: keep that one
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:  # each file flushed to disk before the rename makes it visible
        _write_tensors(tmp / "model.safetensors", model)
        if synthesizer is not None:
            _write_tensors(tmp / "synthesizer.safetensors", synthesizer)
        write_file(tmp / "trainer.pt", lambda f: torch.save(trainer_state, f))
        text = json.dumps(meta, indent=2, sort_keys=True)
        write_file(tmp / "meta.json", lambda f: f.write(text.encode()))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
        raise
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _write_tensors(path: Path, module: torch.nn.Module) -> None:
    # serialised in memory and written by Python, so a failed write is an OSError naming
    # the file (safetensors' own writer raises an error type of its own)
    data = safetensors.torch.save(_tensors(module))
    write_file(path, lambda f: f.write(data))


def load(
    directory: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """(meta, model tensors, synthesizer tensors or None, trainer state); UserError if broken."""
    found = find(directory)
    if found is None:
        raise UserError(
            f"{directory}: no checkpoint there (expected meta.json, "
            "model.safetensors and trainer.pt)"
        )
    try:
        meta = read_json(found / "meta.json", required=("model_shape",))
        model = load_file(str(found / "model.safetensors"))
        synth_path = found / "synthesizer.safetensors"
        synth = load_file(str(synth_path)) if synth_path.exists() else None
        state = torch.load(found / "trainer.pt", map_location="cpu", weights_only=False)
        if not isinstance(state, dict):
            raise UserError(f"{found / 'trainer.pt'}: holds a {type(state).__name__}, not a dict")
        missing = [k for k in TRAINER_KEYS if k not in state]
        if missing:
            raise UserError(f"{found / 'trainer.pt'}: lacks {', '.join(map(repr, missing))}")
    except Exception as e:  # any unreadable part means the checkpoint is unusable
        detail = str(e) if isinstance(e, UserError) else one_line(e, limit=200)
        raise UserError(f"{found}: checkpoint is corrupt or incomplete ({detail})") from None
    return meta, model, synth, state


def shape_mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Keys whose values differ between a checkpoint's model shape and a recipe's.

    A key the checkpoint does not record (written before the key was checked) is not
    compared, so older checkpoints still resume.
    """
    saved = legacy_keys.migrate_shape(saved)  # a run folder written before the renaming
    return [
        f"{k}: checkpoint {saved[k]!r} vs recipe {wanted.get(k)!r}"
        for k in sorted(saved)
        if saved[k] != wanted.get(k)
    ]


# ---------------------------------------------------------------------------- trainer state


@dataclass
class RunState:
    """Where a run stands: what the training loop advances, and a checkpoint keeps beside
    the weights, the optimizer states and the RNG streams."""

    epoch: int = 1  # the next epoch to run
    best_val: float = math.inf
    sums: EpochSums = field(default_factory=EpochSums)  # of the epoch under way
    carried: State | None = None  # the model's state inside an interrupted epoch
    val_losses: list[float] = field(default_factory=list)  # every epoch's, for NT-ASGD
    averaging_since: int | None = None  # NT-ASGD: the epoch after which averaging began

    def state_dict(self) -> dict[str, Any]:
        carried = None if self.carried is None else [t.detach().cpu() for t in self.carried]
        return {
            "epoch": self.epoch,
            "best_val": self.best_val,
            "sums": dataclasses.asdict(self.sums),
            "state": carried,
            "val_losses": list(self.val_losses),
            "averaging_since": self.averaging_since,
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """From ``trainer.pt`` whose ``state`` holds this rank's rows, on its device."""
        self.epoch, self.best_val = st["epoch"], st["best_val"]
        self.sums = EpochSums(**st["sums"])
        self.carried = None if st["state"] is None else tuple(st["state"])
        self.val_losses = list(st.get("val_losses", []))  # older checkpoints lack these two
        self.averaging_since = st.get("averaging_since")


def meta(recipe: Recipe, vocab: Vocabulary, epoch: int, metrics: dict | None) -> dict[str, Any]:
    """``meta.json``: what a reader needs to rebuild the model and judge the checkpoint."""
    return {
        "recipe": to_dict(recipe),
        "model_shape": model_shape(recipe),
        "epoch": epoch,
        "metrics": metrics,
        "vocab": vocab.to_dict(),
    }


def _rng_states(parts: Components, all_cuda: bool) -> dict[str, Any]:
    cuda = parts.device.type == "cuda"
    gen = parts.synth_generator
    if not cuda:
        cuda_rng = None
    elif all_cuda:
        cuda_rng = torch.cuda.get_rng_state_all()
    else:
        cuda_rng = torch.cuda.get_rng_state(parts.device)
    return {
        "rng": torch.get_rng_state(),
        "cuda_rng": cuda_rng,
        "synth_rng": None if gen is None else gen.get_state(),
    }


def trainer_state(
    parts: Components,
    run: RunState,
    log: MetricsLog,
    dist: ddp.DistContext,
    iterate: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any] | None:
    """``trainer.pt``'s content; with several ranks a collective, None off rank 0.

    Every rank's carried state (and synthesizer carry) is gathered and joined in rank order
    into the full-batch layout a single process would hold; every rank's RNG states are
    kept in ``rank_rng`` and ``synth_rng`` (``rng``/``cuda_rng`` stay rank 0's).
    ``iterate``: the training weights when the model file gets the averaged ones (NT-ASGD).
    """
    b = parts.boundary
    st = {
        **run.state_dict(),
        **log.state_dict(),
        "weights": None if iterate is None else {k: v.cpu() for k, v in iterate.items()},
        "carry": to_device(b.carry, "cpu") if b else None,
        "optimizer": parts.optimizer.state_dict(),
        "synth_optimizer": b.optimizer.state_dict() if b else None,
        **_rng_states(parts, all_cuda=True),
        "world_size": dist.world_size,
        "rank_rng": None,
        "kernel_configs": tuning.overrides(),
    }
    if not dist.enabled:
        return st
    mine = {"state": st["state"], "carry": st["carry"], **_rng_states(parts, all_cuda=False)}
    ranks = ddp.all_gather_objects(mine, dist)
    if not dist.is_main:
        return None
    state = ddp.join_rows([r["state"] for r in ranks])
    st["state"] = None if state is None else list(state)
    st["carry"] = ddp.join_rows([r["carry"] for r in ranks])
    st["rank_rng"] = [(r["rng"], r["cuda_rng"]) for r in ranks]
    st["synth_rng"] = [r["synth_rng"] for r in ranks]
    return st


def check_resumable(
    saved_meta: dict[str, Any], st: dict[str, Any], recipe: Recipe, vocab: Vocabulary
) -> None:
    """UserError unless this recipe and corpus can continue the checkpoint's run."""
    diff = shape_mismatch(saved_meta["model_shape"], model_shape(recipe))
    if diff:
        raise UserError(
            "cannot resume: the recipe's model differs from the checkpoint's: " + "; ".join(diff)
        )
    saved_vocab = saved_meta.get("vocab")
    if saved_vocab is not None and saved_vocab != vocab.to_dict():
        raise UserError(
            f"cannot resume: the corpus at data.path={recipe.data.path or '(cache)'!r} "
            "has another vocabulary than the checkpoint's; point data.path at the same text"
        )
    if st["state"] is not None:  # stopped inside an epoch: the carried rows must fit
        saved_batch = st["state"][0].shape[0]
        if saved_batch != recipe.data.batch_size:
            raise UserError(
                f"cannot resume: data.batch_size={recipe.data.batch_size}, but the "
                f"checkpoint stopped inside epoch {st['epoch']} with batch size "
                f"{saved_batch}; resume with data.batch_size={saved_batch}"
            )
        _check_same_segments(saved_meta.get("recipe"), recipe, st["epoch"])


SEGMENT_KEYS = ("run.seed", "bptt.length", "bptt.random_length", "run.max_batches")
"""The keys that fix an epoch's segments (``train.epoch_segments``), which a run stopped
inside an epoch continues by position."""


def _check_same_segments(saved: dict[str, Any] | None, recipe: Recipe, epoch: int) -> None:
    """UserError unless ``recipe`` cuts the interrupted epoch into the segments the saved
    recipe did: the saved position would otherwise point into other segments."""
    now = to_dict(recipe)

    def value(d: dict[str, Any], key: str) -> Any:
        section, name = key.split(".")
        return d.get(section, {}).get(name)

    differ = [k for k in SEGMENT_KEYS if saved and value(saved, k) not in (None, value(now, k))]
    if differ:
        ours = ", ".join(f"{k}={_toml(value(now, k))}" for k in differ)
        theirs = [f"{k}={_toml(value(saved, k))}" for k in differ]
        raise UserError(
            f"cannot resume: {ours}, but the checkpoint stopped inside epoch {epoch}, whose "
            f"segments were cut with {', '.join(theirs)}; resume with {' '.join(theirs)} "
            "(other values may take over at an epoch boundary)"
        )


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_shapes(
    directory: Path,
    weights: dict[str, torch.Tensor],
    synth: dict[str, torch.Tensor] | None,
    st: dict[str, Any],
    parts: Components,
) -> None:
    """UserError naming the file and the first saved tensor whose shape differs from this
    run's: a file copied in from a run of another size, which ``load_state_dict`` would
    report as a traceback (or, for optimizer states, not at all until a step fails)."""
    found = find(directory) or Path(directory)
    model, b = parts.model, parts.boundary
    _check_tensors(found / "model.safetensors", weights, model.state_dict())
    if b is not None and synth is not None:
        _check_tensors(found / "synthesizer.safetensors", synth, b.synthesizer.state_dict())
    trainer = found / "trainer.pt"
    _check_optimizer(trainer, "optimizer", st["optimizer"], parts.optimizer, model)
    if b is not None and st["synth_optimizer"] is not None:
        _check_optimizer(
            trainer, "synth_optimizer", st["synth_optimizer"], b.optimizer, b.synthesizer
        )
    if st["state"] is not None:
        zeros = model.init_state(st["state"][0].shape[0])
        ours = {f"state[{i}]": t for i, t in enumerate(zeros)}
        _check_tensors(trainer, {f"state[{i}]": t for i, t in enumerate(st["state"])}, ours)


def _check_tensors(file: Path, saved: dict[str, Any], ours: dict[str, torch.Tensor]) -> None:
    for name, tensor in ours.items():
        if name not in saved:
            raise UserError(
                f"{file}: lacks {name!r}, which this run's model has: from another model?"
            )
        shape = getattr(saved[name], "shape", None)
        if shape is None or tuple(shape) != tuple(tensor.shape):
            raise UserError(
                f"{file}: {name!r} has shape {_shape(shape)}, this run's has "
                f"{_shape(tensor.shape)}: the file is from a model of another size"
            )
    extra = sorted(set(saved) - set(ours))
    if extra:
        raise UserError(
            f"{file}: holds {extra[0]!r}, which this run's model lacks: from another model?"
        )


def _check_optimizer(
    file: Path, key: str, saved: Any, optimizer: torch.optim.Optimizer, module: torch.nn.Module
) -> None:
    """The saved per-parameter states (Adam's moments, SGD's momentum) against the shapes of
    the parameters they belong to, matched by position as ``load_state_dict`` does."""
    names = {id(p): n for n, p in module.named_parameters()}
    ours = [p for g in optimizer.param_groups for p in g["params"]]
    try:
        ids = [i for g in saved["param_groups"] for i in g["params"]]
        states = saved["state"]
    except (TypeError, KeyError):
        raise UserError(f"{file}: {key!r} is not an optimizer state") from None
    if len(ids) != len(ours):
        raise UserError(
            f"{file}: {key!r} holds the state of {len(ids)} parameters, this run has "
            f"{len(ours)}: the file is from another model"
        )
    for i, p in zip(ids, ours, strict=True):
        for part, value in states.get(i, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                raise UserError(
                    f"{file}: {key} state {part!r} of {names.get(id(p), f'parameter {i}')!r} "
                    f"has shape {_shape(value.shape)}, the parameter's is {_shape(p.shape)}: "
                    "the file is from a model of another size"
                )


def _shape(shape: Any) -> str:
    return "?" if shape is None else str(list(shape))


def training_weights(
    model_file: dict[str, torch.Tensor], st: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The weights a resumed run trains on: the model file's, or with NT-ASGD averaging
    (which puts the averages there) the iterate that ``trainer.pt`` keeps."""
    iterate = st.get("weights")
    return model_file if iterate is None else iterate


def restore_trainer(
    st: dict[str, Any],
    parts: Components,
    run: RunState,
    log: MetricsLog,
    dist: ddp.DistContext,
    seed: int,
) -> None:
    """Put ``trainer.pt``'s content back: optimizer states, the carried state and carry (this
    rank's rows), where the run stands, and the RNG streams.

    The synthesizer's optimizer and carry come back when the run has a synthesizer and the
    checkpoint one too, and the Triton kernels' launch configs as the run had them. After an
    NT-ASGD switch the optimizer becomes averaged SGD first.
    The weights are the caller's to load (:func:`training_weights`), and so are the recipe's
    optimizer settings, which win over the saved ones (``build.apply_recipe_settings``).
    """
    b = parts.boundary
    if b is not None and st["synth_optimizer"] is not None:
        b.optimizer.load_state_dict(st["synth_optimizer"])
        b.carry = to_device(ddp.share_rows(st["carry"], dist), parts.device)
    if st.get("averaging_since") is not None:  # NT-ASGD after its switch: ASGD's state
        parts.optimizer = asgd.averaging_optimizer(parts.optimizer)
    parts.optimizer.load_state_dict(st["optimizer"])
    state = ddp.share_rows(None if st["state"] is None else tuple(st["state"]), dist)
    run.load_state_dict({**st, "state": to_device(state, parts.device)})
    log.load_state_dict(st)
    # the kernel configs the run used (autotuned or stored): the same fp32 sum orders
    tuning.restore_overrides(st.get("kernel_configs", []))
    _restore_rng(st, parts, dist, seed, run.epoch)


def _restore_rng(
    st: dict[str, Any], parts: Components, dist: ddp.DistContext, seed: int, epoch: int
) -> None:
    """Every rank's own streams when the world size is the same; saved by another world
    size, rank 0 continues its stream and the others start fresh ones (exact resume needs
    the same world size)."""
    _restore_synth_rng(st.get("synth_rng"), parts.synth_generator, dist)
    cuda = parts.device.type == "cuda"
    if not dist.enabled:
        torch.set_rng_state(st["rng"])
        if st["cuda_rng"] is not None and cuda:
            torch.cuda.set_rng_state_all(st["cuda_rng"])
        return
    rank_rng = st.get("rank_rng")
    if rank_rng is not None and len(rank_rng) == dist.world_size:
        cpu_rng, cuda_rng = rank_rng[dist.rank]
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None and cuda:
            torch.cuda.set_rng_state(cuda_rng, parts.device)
    elif dist.is_main:
        torch.set_rng_state(st["rng"])
        if st["cuda_rng"] is not None and cuda:
            torch.cuda.set_rng_state(st["cuda_rng"][0], parts.device)
    else:
        torch.manual_seed(ddp.rank_seed(seed + epoch, dist.rank))


def _restore_synth_rng(
    saved: torch.Tensor | list | None, generator: torch.Generator | None, dist: ddp.DistContext
) -> None:
    """The synthesizer's stream, as ``_restore_rng`` does the global ones."""
    if generator is None or saved is None:  # older checkpoints lack it
        return
    states = saved if isinstance(saved, list) else [saved]
    if dist.rank < len(states) and (len(states) == dist.world_size or dist.rank == 0):
        generator.set_state(states[dist.rank])
