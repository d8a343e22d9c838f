"""NT-ASGD: AWD-LSTM's trigger, averaged weights, exact resume, fine-tuning, its recipes."""

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from altgrad_triton.config import recipe as recipes
from altgrad_triton.core import asgd
from altgrad_triton.errors import UserError
from altgrad_triton.run.train import Trainer
from tests.helpers import interrupt_at, tiny_corpus, tiny_recipe

ROOT = Path(__file__).resolve().parents[2]
NT_ASGD = {"name": "nt-asgd", "lr": 2.0, "nonmono": 1}


def awd_switch_epoch(val_losses: list[float], nonmono: int) -> int | None:
    """AWD-LSTM's main.py loop, transcribed: the epoch after which it switches to ASGD."""
    best_val_loss = []
    for epoch, val_loss in enumerate(val_losses, 1):
        if len(best_val_loss) > nonmono and val_loss > min(best_val_loss[:-nonmono]):
            return epoch
        best_val_loss.append(val_loss)
    return None


def test_the_trigger_is_awds():
    rng = random.Random(0)
    for _ in range(500):
        nonmono = rng.randint(1, 5)
        losses = [rng.uniform(4, 5) - 0.02 * i for i in range(rng.randint(1, 20))]
        first = next(
            (e for e in range(1, len(losses) + 1) if asgd.nonmonotonic(losses[:e], nonmono)),
            None,
        )
        assert first == awd_switch_epoch(losses, nonmono), (losses, nonmono)
    assert not asgd.nonmonotonic([3.0, 2.0, 2.5], 1)  # needs more than nonmono earlier ones
    assert asgd.nonmonotonic([3.0, 2.0, 2.5, 2.1], 1)  # 2.1 > 2.0, two epochs back


def test_averaged_weights_hold_the_mean_inside_and_the_iterate_after():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
    with asgd.averaged_weights(model, sgd) as iterate:
        assert iterate is None  # plain SGD: nothing to average, nothing changes
    opt = asgd.averaging_optimizer(sgd)
    assert opt.param_groups[0]["weight_decay"] == 0.01
    seen = []
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(5, 3)).square().sum().backward()
        opt.step()
        seen.append(model.weight.detach().clone())
    last = model.weight.detach().clone()
    with asgd.averaged_weights(model, opt) as iterate:
        # torch's ASGD with t0 = 0 averages from its second step on (its first mu is 1)
        torch.testing.assert_close(model.weight, torch.stack(seen[1:]).mean(0))
        assert torch.equal(iterate["weight"], last)
    assert torch.equal(model.weight, last)


def scripted_validation(trainer, losses):
    """Make validation return ``losses`` in turn, recording whether the model held the
    optimizer's averages when it was asked; the test split is scored for real."""
    real, asked = trainer.parts.evaluate, []

    def evaluate(tokens, batch_size, dist):
        if tokens is not trainer.parts.corpus.valid:
            return real(tokens, batch_size, dist)
        avg = asgd.averages(trainer.parts.optimizer)
        asked.append(avg is not None and all(torch.equal(p, a) for p, a in avg.items()))
        return losses[len(asked) - 1]

    trainer.parts.evaluate = evaluate
    return asked


def test_nt_asgd_switches_when_validation_stops_improving(tmp_path):
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path, optim=NT_ASGD, run={"epochs": 5})
    trainer = Trainer(r, tmp_path / "tiny")
    # epoch 3 (2.6) is worse than epoch 1 (2.0), the best before the last one: switch
    asked = scripted_validation(trainer, [2.0, 2.5, 2.6, 2.4, 1.5])
    trainer.fit()
    assert trainer.run_state.averaging_since == 3
    assert isinstance(trainer.parts.optimizer, torch.optim.ASGD)
    assert asked == [False, False, False, True, True]  # judged on the averages after it
    st = torch.load(tmp_path / "tiny/checkpoints/last/trainer.pt", weights_only=False)
    assert st["averaging_since"] == 3 and st["val_losses"] == [2.0, 2.5, 2.6, 2.4, 1.5]
    # the best checkpoint (epoch 5) holds the averaged weights; trainer.pt the iterate
    best = load_file(str(tmp_path / "tiny/checkpoints/best/model.safetensors"))
    avg = asgd.averages(trainer.parts.optimizer)
    named = dict(trainer.parts.model.named_parameters(remove_duplicate=False))
    for name, tensor in best.items():
        assert torch.equal(tensor, avg[named[name]].cpu()), name
    assert not torch.equal(st["weights"]["decoder.bias"], best["decoder.bias"])


def metric_rows(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds"), row.pop("tokens_per_s")
    return rows


def checkpoint_tensors(run_dir):
    last = run_dir / "checkpoints" / "last"
    st = torch.load(last / "trainer.pt", weights_only=False)
    return load_file(str(last / "model.safetensors")), st["weights"], st["optimizer"]


@pytest.mark.parametrize("stop", ["between-epochs", "inside-epoch"])
def test_an_interrupted_nt_asgd_run_resumes_exactly(tmp_path, monkeypatch, stop):
    """The trigger is scripted to fire after epoch 2; epoch 3 runs averaged SGD."""
    monkeypatch.setattr(asgd, "nonmonotonic", lambda losses, nonmono: len(losses) >= 2)
    data = tiny_corpus(tmp_path / "data")
    straight = tiny_recipe(data, tmp_path / "a", optim=NT_ASGD, run={"epochs": 4})
    Trainer(straight, tmp_path / "a" / "tiny").fit()

    resumed = tiny_recipe(data, tmp_path / "b", optim=NT_ASGD, run={"epochs": 4})
    first = Trainer(resumed, tmp_path / "b" / "tiny")
    if stop == "between-epochs":
        first.run_epoch(first.parts.plan(1))
        first.run_epoch(first.parts.plan(2))
    else:
        stopped = interrupt_at(first, epoch=3, segment=20)
        assert str(stopped).startswith("interrupted at epoch 3")
    again = Trainer(resumed, tmp_path / "b" / "tiny")
    again.restore("last")
    assert again.run_state.averaging_since == 2
    assert isinstance(again.parts.optimizer, torch.optim.ASGD)
    again.fit()
    assert metric_rows(tmp_path / "b" / "tiny") == metric_rows(tmp_path / "a" / "tiny")
    got, want = checkpoint_tensors(tmp_path / "b/tiny"), checkpoint_tensors(tmp_path / "a/tiny")
    for g, w in zip(got[0:2], want[0:2], strict=True):  # averaged model, iterate
        assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in w)
    for k, w in want[2]["state"].items():  # ASGD's step, eta, mu and ax
        assert all(torch.equal(got[2]["state"][k][n], w[n]) for n in w)


def test_fine_tuning_starts_from_the_parents_best_and_stops_like_awd(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    parent = tiny_recipe(data, tmp_path, run={"epochs": 1, "name": "parent"})
    Trainer(parent, tmp_path / "parent").fit()
    r = tiny_recipe(
        data,
        tmp_path,
        run={"epochs": 9, "name": "child", "parent": str(tmp_path / "parent")},
        optim=NT_ASGD,
    )
    trainer = Trainer(r, tmp_path / "child")
    asked = scripted_validation(trainer, [2.0, 2.5, 2.6, 1.0])
    parent_best = load_file(str(tmp_path / "parent/checkpoints/best/model.safetensors"))
    start_of_epoch_1 = []
    real_epoch = trainer.train_epoch

    def watch(plan):
        if plan.epoch == 1:
            start_of_epoch_1.append(
                {k: v.clone() for k, v in trainer.parts.model.state_dict().items()}
            )
        return real_epoch(plan)

    trainer.train_epoch = watch
    trainer.fit()
    assert all(torch.equal(start_of_epoch_1[0][k], parent_best[k]) for k in parent_best)
    assert trainer.run_state.averaging_since == 0 and asked == [True, True, True]
    # epoch 3 is worse than epoch 1, the best before the last nonmono = 1: done after it
    assert [row["epoch"] for row in metric_rows(tmp_path / "child")] == [1, 2, 3]
    assert recipes.load(tmp_path / "child" / "recipe.toml").run.parent == str(tmp_path / "parent")

    other = tiny_recipe(
        data,
        tmp_path,
        run={"parent": str(tmp_path / "parent")},
        optim=NT_ASGD,
        model={"hidden_size": 24},
    )
    with pytest.raises(UserError, match="run.parent: .* model.hidden_size: checkpoint 16 vs"):
        Trainer(other, tmp_path / "other").fit()


def test_nt_asgd_recipe_checks():
    with pytest.raises(UserError, match="optim.momentum: nt-asgd has none"):
        recipes.from_dict({"optim": {"name": "nt-asgd", "momentum": 0.9}})
    with pytest.raises(UserError, match="optim.name: fine-tuning .* set optim.name=nt-asgd"):
        recipes.from_dict({"run": {"parent": "runs/x"}})
    with pytest.raises(UserError, match="optim.nonmono: must be >= 1"):
        recipes.from_dict({"optim": {"nonmono": 0}})


@pytest.mark.parametrize("corpus, batch, dropout_input", [("wt2", 80, 0.65), ("ptb", 40, 0.4)])
def test_awd_lstm_recipes_hold_the_published_setup(corpus, batch, dropout_input):
    r = recipes.load(ROOT / "recipes" / corpus / "awd-lstm.toml")
    m, o, d = r.model, r.optim, r.model.dropout
    assert (m.cell, m.layers, m.hidden_size, m.emb_size, m.tie_weights) == (
        "lstm",
        3,
        1150,
        400,
        True,
    )
    assert (o.name, o.lr, o.nonmono, o.clip, o.weight_decay, o.momentum) == (
        "nt-asgd",
        30.0,
        5,
        0.25,
        1.2e-6,
        0.0,
    )
    assert (o.ar_alpha, o.tar_beta, r.bptt.length, r.bptt.random_length) == (2.0, 1.0, 70, True)
    assert (r.data.batch_size, r.data.eval_batch_size, r.data.test_batch_size) == (batch, 10, 1)
    assert (d.input, d.hidden, d.output, d.embedding, d.weight) == (
        dropout_input,
        0.3,
        0.4,
        0.1,
        0.5,
    )
    assert r.run.epochs == 750 and r.schedule.kind == "constant" and not r.synthetic.enabled
