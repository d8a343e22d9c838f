"""What the builders hand out instead of the recipe (``run.values``, ``run.shapes``): each
value is the recipe's key it stands for, the sizes are the built model's, and the old homes
of the moved functions still give them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from altgrad_triton import tune
from altgrad_triton.run import memory, shapes, values
from altgrad_triton.run.build import build_model
from altgrad_triton.run.inference import LoadedRun
from altgrad_triton.tune import jobs
from tests.helpers import tiny_recipe


def test_the_run_folder_is_out_dir_and_name(tmp_path):
    r = tiny_recipe(tmp_path, tmp_path / "out", run={"name": "wt2-s1"})
    folder = values.run_folder(r)
    assert folder.path == tmp_path / "out" / "wt2-s1" and folder.name == "wt2-s1"


@pytest.mark.parametrize(
    "model",
    [
        {"cell": "lstm", "emb_size": 16, "hidden_size": 24, "layers": 3},
        {"cell": "qrnn", "emb_size": 8, "hidden_size": 12, "layers": 1, "tie_weights": False},
    ],
    ids=["lstm3", "qrnn1-untied"],
)
def test_the_training_shape_is_the_recipe_and_the_built_model(tmp_path, model):
    r = tiny_recipe(tmp_path, tmp_path, model=model, run={"dtype": "bfloat16"})
    s = values.training_shape(r)
    built = build_model(r, 37)
    assert s.layer_sizes[1:] == tuple(int(layer.hidden_size) for layer in built.layers)
    assert s.layer_sizes[0] == built.embedding.weight.shape[1] == r.model.emb_size
    assert (s.cell, s.window, s.output_gate, s.tie_weights) == (
        r.model.cell, r.model.window, r.model.output_gate, r.model.tie_weights
    )  # fmt: skip
    assert (s.bptt, s.batch_size, s.eval_batch_size, s.test_batch_size) == (8, 4, 2, 2)
    assert (s.dtype, s.optimizer, s.momentum) == ("bfloat16", "adam", 0.0)
    kernels = shapes.shapes_from_recipe(r)
    assert kernels.hidden == s.layer_sizes[1:] and kernels.bptt == s.bptt


def test_run_values_are_the_recipe_keys(tmp_path):
    r = tiny_recipe(
        tmp_path,
        tmp_path,
        run={"seed": 7, "backend": "torch", "kernel_check": False},
        optim={"ar_alpha": 1.5, "tar_beta": 0.5},
        synthetic={"enabled": True, "synthesizer": "linear", "context_tokens": 2},
    )
    v = values.run_values(r)
    assert v == values.RunValues(
        corpus="text",
        corpus_path=str(tmp_path),
        seed=7,
        bptt=8,
        batch_size=4,
        eval_batch_size=2,
        dtype="float32",
        ar_alpha=1.5,
        tar_beta=0.5,
        synthesizer="linear",
        context_tokens=2,
        cell="lstm",
        backend="torch",
        kernel_check=False,
    )
    assert values.run_values(tiny_recipe(tmp_path, tmp_path)).synthesizer is None  # no SG


def test_with_backend_changes_the_backend_alone(tmp_path):
    r = tiny_recipe(tmp_path, tmp_path, run={"backend": "triton"})
    moved = values.with_backend(r, "auto")
    assert moved.run.backend == "auto"
    assert dataclasses.replace(moved, run=r.run) == r


def test_a_loaded_run_reads_its_recipe_through_the_values(tmp_path):
    r = tiny_recipe(tmp_path, tmp_path)
    run = LoadedRun(None, None, r, None, Path(tmp_path), "best", {})
    assert run.values == values.run_values(r) and run.char_level is False


def test_the_moved_builders_keep_their_old_homes():
    assert jobs.shapes_from_recipe is tune.shapes_from_recipe is shapes.shapes_from_recipe
    assert jobs.recipe_vocabulary is tune.recipe_vocabulary is shapes.recipe_vocabulary
    assert jobs.RecipeShapes is tune.RecipeShapes is shapes.RecipeShapes
    assert memory.layer_sizes is values.layer_sizes
