"""Builder of kernel shapes: the launch shapes a recipe's training makes on a GPU, as plain
values (``RecipeShapes``), for the tools that tune, check and time the kernels (altgrad-tune,
altgrad-doctor, altgrad-bench), which then read no recipe key.

The layer sizes and the synthesizer's joined state come from the model the builders make
(``build_model`` on ``meta``: no memory, no weights), so they are the trainer's by
construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config.recipe import Recipe
from .build import build_model, recipe_corpus, synthesizer_state
from .values import training_shape


@dataclass(frozen=True)
class RecipeShapes:
    """The launch shapes a recipe implies for training on a GPU."""

    cell: str  # "qrnn" | "lstm"
    batch: int
    bptt: int
    hidden: tuple[int, ...]  # output size of each recurrent layer
    dtype: torch.dtype  # of the recurrent kernels (run.dtype: autocast bf16 or fp32)
    state_size: int  # the synthesizer's joined state per batch row (synthetic.join)
    output_gate: bool = True
    synthetic: bool = False
    synthesizer: str = "toolkit"
    synth_cell: str = "qrnn"
    synth_hidden: int = 50
    synth_scan: bool = True  # the authors' synthesizer: synthetic.authors.sequence = "scan"
    eval_batches: tuple[int, ...] = ()  # validation and test batch sizes (forward only)
    vocab: int | None = None  # the corpus's vocabulary: the LM head's key (None: not tuned)

    @property
    def runs_elementwise_kernel(self) -> bool:
        """Whether the synthesizer is the toolkit's element-wise QRNN, the one on the
        ``elementwise`` kernels."""
        return self.synthesizer == "toolkit" and self.synth_cell == "qrnn"

    @property
    def runs_authors_scan_kernel(self) -> bool:
        """Whether the synthesizer is the authors' with its layer run as one scan, the one
        on the ``authors_scan`` kernels."""
        return self.synthesizer == "authors" and self.synth_scan

    @property
    def state_elements(self) -> int:
        """Elements of the joined state for the whole batch: N of the SG loss/synthesizer."""
        return self.batch * self.state_size


def shapes_from_recipe(recipe: Recipe, vocab: int | None = None) -> RecipeShapes:
    """Layer sizes and the synthesizer's joined state size, from the model the recipe builds
    (on ``meta``); ``vocab``: the corpus's vocabulary (:func:`recipe_vocabulary`), for the
    LM head's jobs.

    The SG loss and the element-wise synthesizer always run in fp32 (the joined state is
    promoted to fp32 and the boundary runs outside autocast); the recurrent kernels run in
    ``run.dtype``.
    """
    with torch.device("meta"):
        model = build_model(recipe, vocab_size=2)
    hidden = tuple(int(layer.hidden_size) for layer in model.layers)
    shape, s = training_shape(recipe), recipe.synthetic
    _, state_size = synthesizer_state(s, model)
    return RecipeShapes(
        cell=shape.cell,
        batch=shape.batch_size,
        bptt=shape.bptt,
        hidden=hidden,
        dtype=getattr(torch, shape.dtype),
        state_size=state_size,
        output_gate=shape.output_gate,
        synthetic=s.enabled,
        synthesizer=s.synthesizer,
        synth_cell=s.cell,
        synth_hidden=s.hidden,
        synth_scan=s.authors.sequence == "scan",
        eval_batches=tuple(dict.fromkeys((shape.eval_batch_size, shape.test_batch_size))),
        vocab=vocab,
    )


def recipe_vocabulary(recipe: Recipe) -> int:
    """The vocabulary size of the recipe's corpus, read as training reads it but never
    downloaded (a GPU machine may have no network): the LM head's override key. Raises
    UserError when the corpus is not on this machine."""
    return len(recipe_corpus(recipe, offline=True).vocab)
