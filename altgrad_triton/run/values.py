"""Builders of plain values: the recipe's keys that code outside the builders acts on, read
here once and handed over as values, so that no module above (or beside) the builders looks
into a recipe. ``build.py`` hands out a run's components; this module hands out

* ``run_folder``: where a run lives (``run.out_dir`` / ``run.name``), as a ``RunFolder``, and
  ``parent_folder`` the run a fine-tuning starts from (``run.parent``);
* ``training_shape``: the sizes a recipe trains at, before anything is built (the memory
  bound, the kernel shapes, the bench's segment counts);
* ``run_values``: what scoring, sampling, probing and resuming a run act on;
* ``probe_values``: the truncation probe per epoch (``[probe]``).

Torch-free, so that altgrad-suite names its runs without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..config.recipe import Recipe
from .folder import RunFolder


def run_folder(recipe: Recipe) -> RunFolder:
    """The folder the recipe's run writes: ``run.out_dir`` / ``run.name``."""
    return RunFolder(Path(recipe.run.out_dir) / recipe.run.name)


def parent_folder(recipe: Recipe) -> RunFolder | None:
    """The run a fine-tuning starts from (``run.parent``), or None."""
    return RunFolder(Path(recipe.run.parent)) if recipe.run.parent else None


# ---------------------------------------------------------------------------- sizes


def layer_sizes(recipe: Recipe) -> list[int]:
    """The width of every recurrent layer's input and output, as ``RNNLanguageModel`` builds
    them: [emb_size, hidden_size, ..., emb_size when tied, else hidden_size]."""
    m = recipe.model
    return (
        [m.emb_size]
        + [m.hidden_size] * (m.layers - 1)
        + [m.emb_size if m.tie_weights else m.hidden_size]
    )


@dataclass(frozen=True)
class TrainingShape:
    """The sizes a recipe trains and evaluates at, known before any model or data exists."""

    cell: str  # model.cell: "qrnn" | "lstm"
    emb_size: int  # model.emb_size
    layer_sizes: tuple[int, ...]  # every recurrent layer's input and output width
    window: int  # model.window: the first QRNN layer's convolution window
    output_gate: bool  # model.output_gate
    tie_weights: bool  # model.tie_weights
    bptt: int  # bptt.length: rows per training (and evaluation) segment
    batch_size: int  # data.batch_size: training columns, over all ranks
    eval_batch_size: int  # data.eval_batch_size
    test_batch_size: int  # data.test_batch_size
    dtype: str  # run.dtype: "float32" | "bfloat16" (autocast on CUDA)
    optimizer: str  # optim.name
    momentum: float  # optim.momentum


def training_shape(recipe: Recipe) -> TrainingShape:
    """The recipe's ``TrainingShape``."""
    m, o = recipe.model, recipe.optim
    return TrainingShape(
        cell=m.cell,
        emb_size=m.emb_size,
        layer_sizes=tuple(layer_sizes(recipe)),
        window=m.window,
        output_gate=m.output_gate,
        tie_weights=m.tie_weights,
        bptt=recipe.bptt.length,
        batch_size=recipe.data.batch_size,
        eval_batch_size=recipe.data.eval_batch_size,
        test_batch_size=recipe.data.test_batch_size,
        dtype=recipe.run.dtype,
        optimizer=o.name,
        momentum=o.momentum,
    )


# ---------------------------------------------------------------------------- a run in use


@dataclass(frozen=True)
class RunValues:
    """What using a run acts on: scoring and sampling its model (``LoadedRun``), probing it,
    fitting synthesizers on it, checking a checkpoint that continues it."""

    corpus: str  # data.corpus
    corpus_path: str  # data.path ("" = the download cache)
    seed: int  # run.seed
    bptt: int  # bptt.length
    batch_size: int  # data.batch_size: the training columns
    eval_batch_size: int  # data.eval_batch_size
    dtype: str  # run.dtype
    ar_alpha: float  # optim.ar_alpha: the loss's activation regularisation
    tar_beta: float  # optim.tar_beta: the loss's temporal activation regularisation
    synthesizer: str | None  # synthetic.synthesizer; None without synthetic gradients
    context_tokens: int  # synthetic.context_tokens: cDNI's next tokens
    cell: str  # model.cell
    backend: str  # run.backend
    kernel_check: bool  # run.kernel_check


def run_values(recipe: Recipe) -> RunValues:
    """The recipe's ``RunValues`` (its sizes from ``training_shape``)."""
    shape, s = training_shape(recipe), recipe.synthetic
    return RunValues(
        corpus=recipe.data.corpus,
        corpus_path=recipe.data.path,
        seed=recipe.run.seed,
        bptt=shape.bptt,
        batch_size=shape.batch_size,
        eval_batch_size=shape.eval_batch_size,
        dtype=shape.dtype,
        ar_alpha=recipe.optim.ar_alpha,
        tar_beta=recipe.optim.tar_beta,
        synthesizer=s.synthesizer if s.enabled else None,
        context_tokens=s.context_tokens,
        cell=shape.cell,
        backend=recipe.run.backend,
        kernel_check=recipe.run.kernel_check,
    )


def with_backend(recipe: Recipe, backend: str) -> Recipe:
    """``recipe`` with ``run.backend = backend``: a trained run used where its own backend
    cannot run (``inference.load_run``), whose model and synthesizer are built for it."""
    return dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, backend=backend))


@dataclass(frozen=True)
class ProbeValues:
    """The truncation probe during training (``probe.per_epoch.EpochProbe``)."""

    every: int  # probe.every: epochs between probes; 0 = off
    boundaries: tuple[int, ...]  # probe.boundaries: the training split's boundaries probed
    max_horizon: int  # probe.max_horizon: horizons 1, 2, 4, ... up to it, in segments


def probe_values(recipe: Recipe) -> ProbeValues:
    """The recipe's ``ProbeValues``."""
    p = recipe.probe
    return ProbeValues(p.every, tuple(p.boundaries), p.max_horizon)
