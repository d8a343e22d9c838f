"""altgrad-tune's jobs (``tune/jobs.py``): the kernels and keys a recipe's training,
validation and test launch, each synthesizer's own, the LM head's, and ``--shapes`` specs."""

import json
from pathlib import Path

import pytest
import torch
from altgrad_triton.kernels import interpreting, tuning

from altgrad_triton import kernels, tune
from altgrad_triton.cli import tune as tune_cli
from altgrad_triton.config import recipe as recipes
from altgrad_triton.errors import UserError
from tests.helpers import run_command, tiny_corpus, tiny_recipe

pytestmark = pytest.mark.usefixtures("no_kernel_overrides")

REPO = Path(__file__).resolve().parents[2]
WT2 = REPO / "recipes" / "wt2.toml"
WT2_LSTM = REPO / "recipes" / "wt2-lstm.toml"


def test_recipe_jobs_probe_the_launchers_keys():
    jobs = tune.unique_jobs(tune.recipe_jobs(tune.shapes_from_recipe(recipes.load(WT2))))
    got = [(j.kernel, j.key) for j in jobs]
    train_and_eval = [
        ("fo_pool_fwd", 32768),  # B*H = 31,000
        ("fo_pool_bwd", 32768),
        ("fo_pool_fwd", 8192),  # 8,000
        ("fo_pool_bwd", 8192),
    ]
    evaluation = [  # validation (B=10) and test (B=1) forwards: keys of their own
        ("fo_pool_fwd", 16384),
        ("fo_pool_fwd", 4096),
        ("fo_pool_fwd", 2048),
        ("fo_pool_fwd", 512),
    ]
    synth = [
        ("elementwise_fwd", ("float32", 131072, 64)),  # N = 109,000; U=50 padded to 64
        ("elementwise_bwd", ("float32", 131072, 64)),
        ("sg_loss", ("float32", 131072)),
    ]
    assert got == [
        *[(k, ("float32", n)) for k, n in train_and_eval],
        *synth,
        *[(k, ("float32", n)) for k, n in evaluation],
        # the other run.dtype, so a bf16 run finds its keys tuned too
        *[(k, ("bfloat16", n)) for k, n in train_and_eval + evaluation],
    ]
    lstm = tune.unique_jobs(
        tune.recipe_jobs(
            tune.shapes_from_recipe(recipes.load(WT2_LSTM, ["run.dtype=bfloat16"])), quick=True
        )
    )
    assert [(j.kernel, j.key) for j in lstm][:4] == [  # dtype, B bucket, H rounded up to 128
        ("lstm_fwd", ("bfloat16", 32, 1152)), ("lstm_bwd", ("bfloat16", 32, 1152)),
        ("lstm_fwd", ("bfloat16", 32, 512)), ("lstm_bwd", ("bfloat16", 32, 512)),
    ]  # fmt: skip
    assert lstm[0].shape == "B=20 T=64 H=1150"  # --quick: LSTM timed over 64 steps


@pytest.mark.parametrize("path", [WT2, WT2_LSTM], ids=["qrnn", "lstm"])
def test_recipe_jobs_cover_training_validation_and_test(path, monkeypatch):
    """Both run.dtype values; training's forward (saving for the backward) and backward at
    the training batch; validation's and test's forwards at their batches, saving nothing
    (SAVE_ACT=False / no checkpoints): the kernels evaluation launches."""
    shapes = tune.shapes_from_recipe(recipes.load(path))
    cell = "lstm" if shapes.cell == "lstm" else "fo_pool"
    module = kernels.lstm if cell == "lstm" else kernels.fo_pooling
    launcher = "lstm_segment_forward" if cell == "lstm" else "fo_pool_forward"
    flag = "save_for_backward" if cell == "lstm" else "save"
    saved = []
    monkeypatch.setattr(module, launcher, lambda *a, **kw: saved.append(kw[flag]))
    jobs = tune.recipe_jobs(shapes, quick=True)
    seen = set()
    for j in jobs:
        if j.family == cell:
            forward = j.kernel.endswith("_fwd")
            if forward:  # the backward launcher is not stubbed: it would run
                j.make(torch.device("meta"))()
            seen.add(
                (j.kernel, tune.dtype_name(j.dtype), j.batch, saved.pop() if forward else True)
            )
    assert shapes.eval_batches == (10, 1)
    want = set()
    for dtype in ("float32", "bfloat16"):
        want |= {(f"{cell}_fwd", dtype, 20, True), (f"{cell}_bwd", dtype, 20, True)}
        want |= {(f"{cell}_fwd", dtype, b, False) for b in shapes.eval_batches}
    assert seen == want
    assert jobs[0].dtype == shapes.dtype  # the recipe's own dtype first


def test_each_synthesizer_tunes_its_own_kernels():
    """The toolkit's synthesizer runs the element-wise kernels; the authors' runs its scan
    (kernels.authors_scan) over the batch's joined recurrent state (synthetic.join =
    "recurrent": no window-2 QRNN's carried input), unless its layer steps element by
    element (in PyTorch)."""
    scan = {"authors_scan_fwd", "authors_scan_bwd"}
    elementwise = {"elementwise_fwd", "elementwise_bwd"}
    toolkit = {j.kernel for j in tune.recipe_jobs(tune.shapes_from_recipe(recipes.load(WT2)))}
    assert elementwise <= toolkit and not toolkit & scan
    for spelling in ("synthetic.synthesizer=authors", "synthetic.preset=authors"):
        shapes = tune.shapes_from_recipe(recipes.load(WT2, [spelling]))
        assert shapes.state_size == 1550 + 1550 + 1550 + 400  # the cells' c, not the input
        jobs = tune.unique_jobs(tune.recipe_jobs(shapes))
        kernels = {j.kernel for j in jobs}
        assert "sg_loss" in kernels and scan <= kernels and not kernels & elementwise
        assert {j.key for j in jobs if j.family == "authors_scan"} == {
            ("float32", tuning.size_bucket(20 * 5050 * 50))  # N*U
        }
    element = recipes.load(
        WT2, ["synthetic.synthesizer=authors", "synthetic.authors.sequence=element"]
    )
    kernels = {j.kernel for j in tune.recipe_jobs(tune.shapes_from_recipe(element))}
    assert "sg_loss" in kernels and not kernels & (scan | elementwise)


@pytest.mark.skipif(not interpreting(), reason="trains on the CPU through the interpreter")
@pytest.mark.parametrize("synthesizer", ["authors", "toolkit"])
def test_the_recipe_jobs_cover_every_launch_a_triton_run_tunes(tmp_path, monkeypatch, synthesizer):
    """A real training run on the Triton backend (the interpreter, a tiny QRNN recipe):
    every (kernel, key) its launchers ask the tuning registry for, training, the
    synthesizer's fit, validation and test, is one altgrad-tune's recipe jobs time, so
    that no launch of a tuned run falls back to a guess or to Triton's autotuner."""
    from altgrad_triton.run.train import Trainer
    from altgrad_triton.run.winners import kernel_tuning

    recipe = tiny_recipe(
        tiny_corpus(tmp_path / "data", n_train=120),
        tmp_path / "runs",
        run={"epochs": 1, "backend": "triton", "max_batches": 2},
        model={"cell": "qrnn", "layers": 2},
        synthetic={"enabled": True, "synthesizer": synthesizer},
    )
    registry = kernel_tuning()
    asked, real_pick = set(), registry.pick

    def spy(kernel, key, heuristic):
        asked.add((kernel, tuple(key)))
        return real_pick(kernel, key, heuristic)

    monkeypatch.setattr(registry, "pick", spy)
    Trainer(recipe, tmp_path / "runs" / "tiny").fit()
    monkeypatch.setattr(registry, "pick", real_pick)
    shapes = tune.shapes_from_recipe(recipe, tune.recipe_vocabulary(recipe))
    jobs = tune.unique_jobs(tune.recipe_jobs(shapes))
    kernel = "authors_scan_fwd" if synthesizer == "authors" else "elementwise_fwd"
    assert {"fo_pool_fwd", "fo_pool_bwd", "sg_loss", "linear_ce", kernel} <= {k for k, _ in asked}
    assert asked <= {(j.kernel, j.key) for j in jobs}


def test_the_head_is_tuned_when_the_corpus_is_here_and_never_downloaded(
    tmp_path, capsys, monkeypatch
):
    """The LM head's key is the vocabulary: read from a corpus on this machine, never
    downloaded (a GPU machine may have no network); a missing one is a note, not an error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the dry run's estimate
    here = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs")
    assert tune.recipe_vocabulary(here) == 18
    heads = [
        j for j in tune.recipe_jobs(tune.shapes_from_recipe(here, 18)) if j.family == "linear_ce"
    ]
    assert [(j.shape, tune.dtype_name(j.dtype)) for j in heads] == [
        ("N=32 V=18", "float32"),  # a chunk: the whole segment, B x T = 4 x 8
        ("N=32 V=18", "bfloat16"),
    ]
    missing = recipes.load(WT2, [f"data.cache_dir={json.dumps(str(tmp_path / 'empty'))}"])
    with pytest.raises(UserError, match="downloading is off"):
        tune.recipe_vocabulary(missing)
    code, out, _ = run_command(tune_cli.main, capsys, str(WT2), "--dry-run", "--quick",
                               f"data.cache_dir={json.dumps(str(tmp_path / 'empty'))}")  # fmt: skip
    assert code == 0 and "note: the LM head (linear_ce) is not tuned" in out
    assert "linear_ce" not in out.split("dry run")[1]


def test_shape_specs():
    jobs = tune.parse_shape_spec("fo_pool:B=2,T=3,H=5,dtype=bfloat16", torch.float32)
    assert [j.kernel for j in jobs] == ["fo_pool_fwd", "fo_pool_bwd"]
    assert all(j.dtype == torch.bfloat16 for j in jobs)
    only = tune.parse_shape_spec("elementwise_bwd:N=7", torch.float16)
    assert [(j.kernel, j.dtype, j.shape) for j in only] == [
        ("elementwise_bwd", torch.float16, "N=7 U=50")
    ]
    head = tune.parse_shape_spec("linear_ce:N=8,V=100,dtype=bfloat16", torch.float32)
    assert [(j.kernel, j.shape) for j in head] == [("linear_ce", "N=8 V=100")]
    assert tune.probe_key(head[0]) == ("bfloat16", 128)  # the key its launcher asks for
    with pytest.raises(UserError, match="unknown"):
        tune.parse_shape_spec("sg_loss:N=3,Q=4", torch.float32)
    with pytest.raises(UserError, match="integers"):
        tune.parse_shape_spec("sg_loss:N=x", torch.float32)
