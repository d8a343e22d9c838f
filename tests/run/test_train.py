"""End-to-end training on a tiny corpus: outputs, exact resume, interruption, NaN stop."""

import io
import json
import shutil

import pytest
import torch
from rich.console import Console

from altgrad_triton.core.model import next_tokens_context
from altgrad_triton.core.synthesizers import AuthorsSynthesizer
from altgrad_triton.errors import UserError
from altgrad_triton.run import metrics as metrics_module
from altgrad_triton.run.build import segment_plan
from altgrad_triton.run.checkpoint import layout
from altgrad_triton.run.checkpoint.checkpointer import Checkpointer
from altgrad_triton.run.train import Trainer, TrainingStopped
from tests.helpers import interrupt_at, tiny_corpus, tiny_recipe

SYNTH = {
    "enabled": True,
    "synthesizer": "toolkit",
    "hidden": 6,
    "alternation": {"start": "real", "switch_epochs": [2], "switch_at_restarts": True},
}
CONDITIONED = {**SYNTH, "synthesizer": "linear", "context_tokens": 2}
AUTHORS = {
    "enabled": True,
    "synthesizer": "authors",
    "hidden": 6,
    "alternation": SYNTH["alternation"],
}
RESTARTS = {"kind": "cosine_restarts", "periods": [1, 2]}


def metrics(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # wall-clock fields differ between runs
        r.pop("seconds")
        r.pop("tokens_per_s")
    return rows


@pytest.fixture
def corpus_dir(tmp_path):
    return tiny_corpus(tmp_path / "data")


def test_training_writes_metrics_checkpoints_and_results(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", synthetic=SYNTH, schedule=RESTARTS)
    results = Trainer(r, tmp_path / "runs" / "tiny").fit()
    run = tmp_path / "runs" / "tiny"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    # switch epoch 2 is also a restart: one switch, not two that cancel
    assert [row["mode"] for row in rows] == ["real", "synthetic"]
    for key in (
        "lr",
        "train_loss",
        "train_ppl",
        "val_loss",
        "val_ppl",
        "tokens_per_s",
        "seconds",
        "sg_loss",
        "sg_cos",
        "sg_norm_ratio",
    ):
        assert all(row[key] is not None for row in rows), key
    assert rows[1]["val_loss"] < rows[0]["val_loss"] < 3.0  # 16 words + eos: ln 17 = 2.83
    for tag in ("best", "last"):
        for f in ("model.safetensors", "synthesizer.safetensors", "meta.json", "trainer.pt"):
            assert (run / "checkpoints" / tag / f).exists()
    assert (run / "recipe.toml").exists()
    assert results["test_ppl"] < 17 and json.loads((run / "results.json").read_text())


@pytest.mark.parametrize(
    "synthetic", [None, SYNTH, CONDITIONED, AUTHORS], ids=["real", "sg", "cdni", "authors"]
)
def test_resume_continues_exactly(corpus_dir, tmp_path, synthetic):
    extra = {"synthetic": synthetic, "schedule": RESTARTS} if synthetic else {}
    straight = tiny_recipe(corpus_dir, tmp_path / "a", run={"epochs": 4}, **extra)
    Trainer(straight, tmp_path / "a" / "tiny").fit()

    first = tiny_recipe(corpus_dir, tmp_path / "b", run={"epochs": 2}, **extra)
    Trainer(first, tmp_path / "b" / "tiny").fit()
    more = tiny_recipe(corpus_dir, tmp_path / "b", run={"epochs": 4}, **extra)
    resumed = Trainer(more, tmp_path / "b" / "tiny")
    resumed.restore("last")
    resumed.fit()
    assert metrics(tmp_path / "b" / "tiny") == metrics(tmp_path / "a" / "tiny")


def test_context_is_the_embeddings_of_the_tokens_after_the_boundary(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path, synthetic=CONDITIONED)
    trainer = Trainer(r, tmp_path / "tiny")
    data, emb = trainer.parts.train_data, trainer.parts.model.embedding.weight.detach()
    b, e = data.shape[1], emb.shape[1]
    ctx = next_tokens_context(data, emb, 3, 2)
    assert ctx.shape == (b, 2 * e)
    torch.testing.assert_close(ctx[:, :e], emb[data[3]])  # the segment's first input
    torch.testing.assert_close(ctx[:, e:], emb[data[4]])  # ... and its first target
    last = next_tokens_context(data, emb, data.shape[0] - 1, 2)  # past the end: the last row
    torch.testing.assert_close(last[:, e:], emb[data[-1]])
    trainer.fit()
    rows = metrics(tmp_path / "tiny")
    assert [r["mode"] for r in rows] == ["real", "synthetic"]
    assert all(r["sg_cos"] is not None for r in rows)


def test_interrupted_epoch_resumes_exactly(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "a", synthetic=SYNTH, schedule=RESTARTS)
    Trainer(r, tmp_path / "a" / "tiny").fit()

    r = tiny_recipe(corpus_dir, tmp_path / "b", synthetic=SYNTH, schedule=RESTARTS)
    trainer = Trainer(r, tmp_path / "b" / "tiny")
    stopped = interrupt_at(trainer, epoch=2, segment=14)  # epoch 1 has 65 segments
    assert str(stopped).startswith("interrupted at epoch 2") and stopped.exit_code == 130
    again = Trainer(r, tmp_path / "b" / "tiny")
    again.restore("last")
    assert again.run_state.sums.segment > 0 and again.run_state.carried is not None
    again.fit()
    assert metrics(tmp_path / "b" / "tiny") == metrics(tmp_path / "a" / "tiny")


def test_non_finite_loss_stops_and_keeps_best(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 3})
    trainer = Trainer(r, tmp_path / "runs" / "tiny")
    trainer.run_epoch(trainer.parts.plan(1))
    best = (tmp_path / "runs/tiny/checkpoints/best/model.safetensors").read_bytes()
    with torch.no_grad():
        trainer.parts.model.decoder.bias.fill_(float("nan"))
    with pytest.raises(TrainingStopped, match=r"non-finite loss .* at epoch 2, segment 1") as e:
        trainer.run_epoch(trainer.parts.plan(2))
    assert e.value.exit_code == 1
    assert (tmp_path / "runs/tiny/checkpoints/best/model.safetensors").read_bytes() == best


def test_resume_with_different_model_shape_is_refused(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    other = tiny_recipe(corpus_dir, tmp_path / "runs", model={"hidden_size": 24, "layers": 3})
    with pytest.raises(
        UserError,
        match=r"model.hidden_size: checkpoint 16 vs recipe 24; "
        r"model.layers: checkpoint 2 vs recipe 3",
    ):
        Trainer(other, tmp_path / "runs" / "tiny").restore("last")


def test_checkpoint_survives_a_cut_off_save(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    last = tmp_path / "runs/tiny/checkpoints/last"
    # a save cut off after renaming the old checkpoint aside, before the new one landed
    last.rename(last.parent / ".last.old")
    assert layout.find(last) == last.parent / ".last.old"
    saved = Checkpointer(tmp_path / "runs/tiny").load("last")
    assert saved.meta["epoch"] == 2 and "embedding.weight" in saved.weights
    assert saved.trainer.run.epoch == 2 and saved.where == last.parent / ".last.old"


def test_corrupt_checkpoint_is_a_user_error(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    (tmp_path / "runs/tiny/checkpoints/last/model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="checkpoint is corrupt"):
        Trainer(r, tmp_path / "runs" / "tiny").restore("last")


def test_capped_epochs_walk_through_the_split(corpus_dir, tmp_path):
    """run.max_batches takes a new window of consecutive segments each epoch."""
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 3, "max_batches": 20})
    trainer = Trainer(r, tmp_path / "runs" / "tiny")
    seen = []
    real_segment = trainer.train_segment

    def record(start, *args, **kwargs):
        seen.append(start)
        return real_segment(start, *args, **kwargs)

    trainer.train_segment = record
    trainer.fit()
    rows = trainer.parts.train_data.shape[0]
    assert seen == [s for e in (1, 2, 3) for s, _ in segment_plan(r).epoch(rows, e)]
    assert len(seen) == 60
    windows = [seen[0:20], seen[20:40], seen[40:60]]
    assert all(w == sorted(w) for w in windows)  # consecutive segments within an epoch
    # each epoch draws its own lengths, so windows 2 and 3 start about 20 and 40 segments in
    assert windows[0][0] == 0 < 10 * 8 < windows[1][0] < 30 * 8 < windows[2][0]


def test_synthetic_epochs_are_checked_for_a_diverging_synthesizer(
    corpus_dir, tmp_path, monkeypatch
):
    seen = []

    def fake_warning(lowest, loss, cos, norm_ratio):
        seen.append((lowest, loss, norm_ratio))
        return "warning: diverging"

    monkeypatch.setattr(metrics_module, "divergence_warning", fake_warning)
    out = io.StringIO()
    r = tiny_recipe(corpus_dir, tmp_path, synthetic=SYNTH, run={"epochs": 3})
    Trainer(r, tmp_path / "tiny", console=Console(file=out, width=200)).fit()
    rows = metrics(tmp_path / "tiny")
    assert [row["mode"] for row in rows] == ["real", "synthetic", "synthetic"]
    # checked after each synthetic epoch, against the lowest loss of the epochs before it
    assert seen == [
        (rows[0]["sg_loss"], rows[1]["sg_loss"], rows[1]["sg_norm_ratio"]),
        (min(rows[0]["sg_loss"], rows[1]["sg_loss"]), rows[2]["sg_loss"], rows[2]["sg_norm_ratio"]),
    ]
    assert out.getvalue().count("warning: diverging") == 2


def test_resume_applies_the_recipes_optimizer_settings(corpus_dir, tmp_path):
    """A state dict restores its saved settings; a resumed recipe's own ones must win."""
    r = tiny_recipe(corpus_dir, tmp_path / "runs", synthetic=SYNTH, run={"epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    changed = tiny_recipe(
        corpus_dir,
        tmp_path / "runs",
        synthetic={**SYNTH, "lr": 5e-5},
        optim={"lr": 3e-3, "weight_decay": 0.25},
        run={"epochs": 2},
    )
    again = Trainer(changed, tmp_path / "runs" / "tiny")
    again.restore("last")
    assert all(g["weight_decay"] == 0.25 for g in again.parts.optimizer.param_groups)
    assert all(g["lr"] == 5e-5 for g in again.parts.boundary.optimizer.param_groups)
    sgd = tiny_recipe(corpus_dir, tmp_path / "runs", synthetic=SYNTH, optim={"name": "sgd"})
    with pytest.raises(UserError, match="optim.name: checkpoint 'adam' vs recipe 'sgd'"):
        Trainer(sgd, tmp_path / "runs" / "tiny").restore("last")


def test_resume_refuses_another_synthesizer_context_or_vocabulary(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", synthetic=CONDITIONED, run={"epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    more = tiny_recipe(
        corpus_dir, tmp_path / "runs", synthetic={**CONDITIONED, "context_tokens": 3}
    )
    with pytest.raises(UserError, match="synthetic.context_tokens: checkpoint 2 vs recipe 3"):
        Trainer(more, tmp_path / "runs" / "tiny").restore("last")
    other_text = tiny_corpus(tmp_path / "other", seed=1)  # same words, another order
    moved = tiny_recipe(other_text, tmp_path / "runs", synthetic=CONDITIONED)
    with pytest.raises(UserError, match="another vocabulary"):
        Trainer(moved, tmp_path / "runs" / "tiny").restore("last")


def test_resume_inside_an_epoch_needs_the_same_batch_size(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs")
    interrupt_at(Trainer(r, tmp_path / "runs" / "tiny"), epoch=1, segment=2)
    wider = tiny_recipe(corpus_dir, tmp_path / "runs", data={"batch_size": 2})
    with pytest.raises(UserError, match="data.batch_size=2, .* resume with data.batch_size=4"):
        Trainer(wider, tmp_path / "runs" / "tiny").restore("last")


def test_triton_backend_without_cuda_is_a_user_error(corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"backend": "triton"})
    with pytest.raises(UserError, match="run.backend: 'triton' needs a CUDA device"):
        Trainer(r, tmp_path / "runs" / "tiny")


def test_every_split_batch_size_is_checked_before_training(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", data={"test_batch_size": 100_000})
    with pytest.raises(UserError, match=r"data.test_batch_size: 100000 leaves 0 step"):
        Trainer(r, tmp_path / "runs" / "tiny")


def test_non_finite_loss_before_any_checkpoint_says_so(corpus_dir, tmp_path):
    trainer = Trainer(tiny_recipe(corpus_dir, tmp_path / "runs"), tmp_path / "runs" / "tiny")
    with torch.no_grad():
        trainer.parts.model.decoder.bias.fill_(float("nan"))
    with pytest.raises(TrainingStopped, match="at epoch 1, segment 1; no checkpoint yet"):
        trainer.run_epoch(trainer.parts.plan(1))


def test_the_divergence_check_survives_a_resume(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", synthetic=SYNTH, run={"epochs": 1})
    first = Trainer(r, tmp_path / "runs" / "tiny")
    first.fit()
    assert first.log.lowest_sg_loss is not None
    again = Trainer(r, tmp_path / "runs" / "tiny")
    again.restore("last")
    assert again.log.lowest_sg_loss == first.log.lowest_sg_loss


def test_a_save_after_a_cut_off_one_keeps_a_checkpoint_throughout(
    corpus_dir, tmp_path, monkeypatch
):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 1})
    trainer = Trainer(r, tmp_path / "runs" / "tiny")
    trainer.fit()
    last = tmp_path / "runs/tiny/checkpoints/last"
    last.rename(last.parent / ".last.old")  # cut off between the two renames
    seen = []
    real_rmtree = shutil.rmtree

    def rmtree_watching(path, *args, **kwargs):  # at every deletion a checkpoint is findable
        seen.append(layout.find(last) is not None)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree_watching)
    trainer.save("last")
    assert seen and all(seen)
    assert (last / "meta.json").exists() and not (last.parent / ".last.old").exists()


def test_resume_drops_the_line_of_an_epoch_that_was_not_checkpointed(corpus_dir, tmp_path):
    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    path = tmp_path / "runs/tiny/metrics.jsonl"
    line = path.read_text().splitlines()[0]
    # stopped after epoch 2's line was written, before its checkpoint; and a torn line
    second = line.replace('"epoch": 1', '"epoch": 2')
    path.write_text(line + "\n" + second + "\n" + '{"epo')
    again = Trainer(tiny_recipe(corpus_dir, tmp_path / "runs"), tmp_path / "runs" / "tiny")
    again.restore("last")
    assert path.read_text() == line + "\n"


@pytest.mark.parametrize(
    "synth",
    [SYNTH, {**SYNTH, "synthesizer": "mlp", "hidden": 8, "dropout": 0.5}, CONDITIONED, AUTHORS],
    ids=["elementwise", "mlp", "conditioned", "authors"],
)
def test_a_synthesizer_that_injects_nothing_leaves_the_bptt_run_unchanged(
    corpus_dir, tmp_path, synth
):
    """The synthesizer's weights, noise and dropout come from its own RNG stream: at
    synthetic.scale = 0 an SG run is its BPTT twin, number for number, so SG-vs-BPTT
    comparisons of one seed differ by the synthetic gradient alone."""
    bptt = tiny_recipe(corpus_dir, tmp_path / "bptt", model={"dropout": {"output": 0.3}})
    sg = tiny_recipe(
        corpus_dir,
        tmp_path / "sg",
        model={"dropout": {"output": 0.3}},
        synthetic={**synth, "scale": 0.0},
    )
    Trainer(bptt, tmp_path / "bptt" / "tiny").fit()
    Trainer(sg, tmp_path / "sg" / "tiny").fit()
    keys = ("train_loss", "val_loss")
    rows_bptt, rows_sg = metrics(tmp_path / "bptt" / "tiny"), metrics(tmp_path / "sg" / "tiny")
    assert [row["mode"] for row in rows_sg] == ["real", "synthetic"]
    assert [[row[k] for k in keys] for row in rows_sg] == [
        [row[k] for k in keys] for row in rows_bptt
    ]


def test_a_checkpoint_without_the_later_keys_still_resumes(corpus_dir, tmp_path):
    """trainer.pt keeps its flat keys; those added after the first release (the synthesizer's
    RNG stream, per-rank RNG, the divergence check's lowest loss) are optional."""
    r = tiny_recipe(corpus_dir, tmp_path / "runs", synthetic=SYNTH, run={"epochs": 1})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    path = tmp_path / "runs/tiny/checkpoints/last/trainer.pt"
    st = torch.load(path, weights_only=False)
    assert {"epoch", "best_val", "sums", "state", "carry", "optimizer", "rng"} <= st.keys()
    for key in ("synth_rng", "rank_rng", "lowest_sg_loss"):
        del st[key]
    torch.save(st, path)
    again = Trainer(tiny_recipe(corpus_dir, tmp_path / "runs", synthetic=SYNTH), path.parents[2])
    again.restore("last")
    assert again.run_state.epoch == 2 and again.log.lowest_sg_loss is None
    again.fit()
    assert [row["epoch"] for row in metrics(tmp_path / "runs" / "tiny")] == [1, 2]


def test_the_authors_synthesizer_comes_with_their_boundary(corpus_dir, tmp_path):
    """On a window-2 QRNN: the joined state leaves out the carried last input, the target is
    the raw gradient (target_scale 1, not tokens per segment), summed, split, every call."""
    r = tiny_recipe(
        corpus_dir, tmp_path, synthetic=AUTHORS, model={"cell": "qrnn", "window": 2, "layers": 2}
    )
    trainer = Trainer(r, tmp_path / "tiny")
    b = trainer.parts.boundary
    assert isinstance(b.synthesizer, AuthorsSynthesizer)
    assert b.joined == trainer.parts.model.recurrent_state_indices() == (0, 2)
    assert (b.target_scale, b.scale, b.reduction, b.advance, b.split_target) == (
        1.0,
        0.1,
        "sum",
        "every_call",
        True,
    )
    group = b.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (1e-3, 1.2e-6)
    trainer.fit()
    rows = metrics(tmp_path / "tiny")
    assert [row["mode"] for row in rows] == ["real", "synthetic"]
    assert all(row["sg_cos"] is not None and row["val_loss"] < 3.0 for row in rows)
    carry = trainer.parts.boundary.carry  # the scan's carry: the last scalar's (c, encoded input)
    assert [tuple(t.shape) for t in carry] == [(1, 6), (1, 6)]


def test_kernel_configs_the_run_used_come_back_on_resume(corpus_dir, tmp_path):
    """On a GPU, launches without a stored winner autotune once and pin the winner; another
    process could pick another config (another fp32 sum order), so checkpoints keep them."""
    from altgrad_triton.kernels import tuning

    key = ("float32", 64)
    meta = tuning.candidates("fo_pool_fwd")[-1]  # a saved config must still be a candidate
    try:
        tuning.set_override("fo_pool_fwd", key, meta)
        r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 1})
        Trainer(r, tmp_path / "runs" / "tiny").fit()
        tuning.clear_overrides()
        again = Trainer(r, tmp_path / "runs" / "tiny")
        again.restore("last")
        assert tuning.get_override("fo_pool_fwd", key) == meta
    finally:
        tuning.clear_overrides()


def test_a_resume_says_where_it_resumes_and_its_bar_shows_this_process_speed(
    corpus_dir, tmp_path, capsys, monkeypatch
):
    """Issue 32: a resume printed no line saying where it continued, and its bar averaged
    the tokens/s of the earlier, interrupted processes with its own."""
    from altgrad_triton import progress

    r = tiny_recipe(corpus_dir, tmp_path / "runs", run={"epochs": 1})
    interrupt_at(Trainer(r, tmp_path / "runs" / "tiny"), epoch=1, segment=2)
    capsys.readouterr()
    resumed = Trainer(r, tmp_path / "runs" / "tiny")
    resumed.restore("last")
    out = capsys.readouterr().out
    assert (
        f"resuming from checkpoint last ({tmp_path / 'runs' / 'tiny' / 'checkpoints' / 'last'}) "
        "at epoch 1, after segment 3" in out
    )
    resumed.run_state.sums.seconds += 1e6  # the earlier processes took forever
    speeds = []
    real_update = progress.EpochProgress.update
    monkeypatch.setattr(
        progress.EpochProgress,
        "update",
        lambda self, done, loss, tps: (speeds.append(tps), real_update(self, done, loss, tps)),
    )
    resumed.fit()
    assert speeds and min(speeds) > 1.0  # not the 1e6 s of the earlier processes
