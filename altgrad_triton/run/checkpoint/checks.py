"""What a checkpoint is checked against before it is used: the recipe and corpus that
continue it (:func:`check_resumable`), this run's tensor shapes (:func:`check_shapes`: files
copied from a run of another size are one line naming the file and the first tensor that
differs), a fine-tuning's recipe (:func:`check_parent`), and the run folder a model is
read from (:func:`check_run_folder`: checkpoints copied in from another run, by the rule
a resume applies). Each failure is one UserError line that names the key or file and says
what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...config import legacy_keys
from ...config import recipe as recipes
from ...config.recipe import Recipe, model_shape, to_dict
from ...data import Vocabulary
from ...errors import UserError, one_line
from ..build import Components
from ..folder import RunFolder
from ..values import run_values
from . import layout
from .contents import Checkpoint


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


def check_resumable(ckpt: Checkpoint, recipe: Recipe, vocab: Vocabulary) -> None:
    """UserError unless this recipe and corpus can continue the checkpoint's run."""
    diff = shape_mismatch(ckpt.meta["model_shape"], model_shape(recipe))
    if diff:
        raise UserError(
            "cannot resume: the recipe's model differs from the checkpoint's: " + "; ".join(diff)
        )
    found, values = ckpt.where or Path("."), run_values(recipe)
    raw = ckpt.meta.get("vocab")  # None: written before checkpoints recorded it
    saved = None if raw is None else vocabulary_of(raw, ckpt, found)
    if saved is not None and saved != vocab:
        raise UserError(
            f"cannot resume: the corpus at data.path={values.corpus_path or '(cache)'!r} "
            f"has another vocabulary than {found / layout.META} "
            f"({vocab_difference(saved, vocab)}); point data.path at the text the run was "
            "trained on, or if that file was edited, put the run's own back"
        )
    run = ckpt.trainer.run
    if run.carried is not None:  # stopped inside an epoch: the carried rows must fit
        saved_batch = run.carried[0].shape[0]
        if saved_batch != values.batch_size:
            raise UserError(
                f"cannot resume: data.batch_size={values.batch_size}, but the "
                f"checkpoint stopped inside epoch {run.epoch} with batch size "
                f"{saved_batch}; resume with data.batch_size={saved_batch}"
            )
        _check_same_segments(ckpt.meta.get("recipe"), recipe, run.epoch)


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


def check_shapes(ckpt: Checkpoint, parts: Components) -> None:
    """UserError naming the file and the first saved tensor whose shape differs from this
    run's: a file copied in from a run of another size, which ``load_state_dict`` would
    report as a traceback (or, for optimizer states, not at all until a step fails)."""
    found, st = ckpt.where or Path("."), ckpt.trainer
    model, b = parts.model, parts.boundary
    _check_tensors(found / layout.MODEL, ckpt.weights, model.state_dict())
    if b is not None and ckpt.synthesizer is not None:
        _check_tensors(found / layout.SYNTHESIZER, ckpt.synthesizer, b.synthesizer.state_dict())
    trainer = found / layout.TRAINER
    _check_optimizer(trainer, "optimizer", st.optimizer, parts.optimizer, model)
    if b is not None and st.synth_optimizer is not None:
        _check_optimizer(trainer, "synth_optimizer", st.synth_optimizer, b.optimizer, b.synthesizer)
    carried = st.run.carried
    if carried is not None:
        zeros = model.init_state(carried[0].shape[0])
        ours = {f"state[{i}]": t for i, t in enumerate(zeros)}
        _check_tensors(trainer, {f"state[{i}]": t for i, t in enumerate(carried)}, ours)


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


def check_parent(
    ckpt: Checkpoint, parent_vocab: Vocabulary, parent: Path, recipe: Recipe, vocab: Vocabulary
) -> None:
    """UserError unless a fine-tuning's recipe and corpus fit its parent run's model."""
    saved = {k: v for k, v in ckpt.meta["model_shape"].items() if k.startswith("model.")}
    diff = shape_mismatch(saved, model_shape(recipe))
    if diff:
        raise UserError(
            f"run.parent: {parent}'s model differs from this recipe's: " + "; ".join(diff)
        )
    if parent_vocab != vocab:
        raise UserError(
            f"run.parent: {parent} was trained on a text with another vocabulary; "
            "fine-tune on the same data.corpus and data.path"
        )


def check_run_folder(ckpt: Checkpoint, run_dir: Path) -> None:
    """UserError unless the checkpoint is its run folder's: the model its ``meta.json``
    records is the one the folder's ``recipe.toml`` describes, by the rule a resume applies
    (``shape_mismatch``). Files copied in from another run would otherwise be read as this
    run's model. A folder without a ``recipe.toml`` (checkpoints alone) is not checked."""
    path = RunFolder(run_dir).recipe
    if not path.is_file():
        return
    diff = shape_mismatch(ckpt.meta["model_shape"], model_shape(recipes.load(path)))
    if diff:
        raise UserError(
            f"{ckpt.where or run_dir}: not this run's checkpoint: its model differs from "
            f"{path}'s: {'; '.join(diff)}; put the run's own checkpoints back, or use the "
            "run folder these came from"
        )


def recipe_and_vocab(ckpt: Checkpoint, directory: Path) -> tuple[Recipe, Vocabulary]:
    """The resolved recipe and vocabulary that ``meta.json`` (of the checkpoint at
    ``directory``) records, to rebuild the model from; a one-line UserError naming the file
    when they are missing or malformed."""
    where = directory / layout.META
    try:
        recipe, raw = recipes.from_dict(ckpt.meta["recipe"]), ckpt.meta["vocab"]
    except KeyError as e:
        raise UserError(
            f"{where}: lacks the key {e.args[0]!r} that a checkpoint's meta.json "
            "holds (written by altgrad-train); the checkpoint is damaged or not one"
        ) from None
    except (TypeError, UserError) as e:
        raise UserError(f"{where}: {one_line(e, typed=False)}") from None
    return recipe, vocabulary_of(raw, ckpt, directory)


EMBEDDING = "embedding.weight"
"""The model file's tensor with one row per vocabulary token."""


def vocabulary_of(raw: Any, ckpt: Checkpoint, directory: Path) -> Vocabulary:
    """``meta.json``'s vocabulary (``raw``, of the checkpoint at ``directory``), checked as
    that file's content: malformed, or of another size than the model file's embedding,
    it is one UserError naming meta.json. A damaged file is then not taken for a corpus
    of another vocabulary (a resume) or for weights that do not fit (a model read)."""
    where = directory / layout.META
    try:
        vocab = Vocabulary.from_dict(raw)
    except UserError as e:
        raise UserError(f"{where}: {one_line(e, typed=False)}") from None
    rows = getattr(ckpt.weights.get(EMBEDDING), "shape", None)
    if rows and rows[0] != len(vocab):
        raise UserError(
            f"{where}: its vocabulary has {len(vocab):,} tokens, the model in "
            f"{directory / layout.MODEL} {rows[0]:,}; the file is damaged (put the run's "
            "own meta.json back)"
        )
    return vocab


def vocab_difference(saved: Vocabulary, ours: Vocabulary) -> str:
    """How a checkpoint's vocabulary (``saved``) differs from a corpus's (``ours``), for a
    message: the sizes, and the first token that differs."""
    sizes = f"{len(saved):,} tokens there, {len(ours):,} in the corpus"
    pairs = zip(saved.itos, ours.itos, strict=False)  # the shorter one's length
    i = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
    if i is None:
        return sizes
    first = f"token {i} is {saved.itos[i]!r} there, {ours.itos[i]!r} in the corpus"
    return first if len(saved) == len(ours) else f"{sizes}; {first}"


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: Any) -> None:
    """``model.load_state_dict(weights)``; weights of another shape (a model file replaced,
    its meta.json not) as one line naming the checkpoint ``where`` and the first tensor that
    differs, not PyTorch's page of them."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = next((x for x in lines[1:] if "size mismatch" in x or "key" in x), None)
        raise UserError(
            f"{where}: the checkpoint's weights do not fit the model its recipe describes "
            f"({one_line(first or e, 160, typed=False)})"
        ) from None
