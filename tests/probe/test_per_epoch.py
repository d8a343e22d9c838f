"""The truncation probe during training ([probe] every = N): it leaves the run unchanged,
equals altgrad-probe on the same weights, resumes without doubled lines, and refuses what it
cannot do before training starts."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from altgrad_triton.errors import UserError
from altgrad_triton.probe.on_run import probe_run
from altgrad_triton.probe.per_epoch import EpochProbe, summary_line
from altgrad_triton.run.distributed import DistContext
from altgrad_triton.run.inference import load_run
from altgrad_triton.run.train import Trainer
from tests.helpers import interrupt_at, tiny_corpus, tiny_recipe

# dropout on and a noisy element-wise synthesizer that alternates: every random stream the
# probe could disturb is in use
SYNTH = {
    "enabled": True,
    "synthesizer": "toolkit",
    "hidden": 6,
    "alternation": {"start": "real", "switch_epochs": [2]},
}
PROBE = {"every": 1, "boundaries": [5, 15], "max_horizon": 2}


def train(root, name: str, **sections):
    data = tiny_corpus(root / "data")
    recipe = tiny_recipe(data, root / "runs", run={"name": name}, synthetic=SYNTH, **sections)
    Trainer(recipe, root / "runs" / name, hooks=[EpochProbe(recipe, root / "runs" / name)]).fit()
    return root / "runs" / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 2-epoch run without the probe and with it at every epoch."""
    root = tmp_path_factory.mktemp("probe-epochs")
    return train(root, "plain"), train(root, "probed", probe=PROBE)


def rows(path):
    out = [json.loads(x) for x in path.read_text().splitlines()]
    for r in out:
        for k in ("seconds", "tokens_per_s"):
            r.pop(k, None)
    return out


def test_a_run_with_the_probe_trains_exactly_as_one_without(runs):
    plain, probed = runs
    assert rows(probed / "metrics.jsonl") == rows(plain / "metrics.jsonl")
    for what in ("model", "synthesizer"):
        got = load_file(str(probed / "checkpoints" / "last" / f"{what}.safetensors"))
        want = load_file(str(plain / "checkpoints" / "last" / f"{what}.safetensors"))
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), (what, k)
    lines = rows(probed / "probe.jsonl")
    assert [(r["epoch"], r["gradient_mode"]) for r in lines] == [(1, "real"), (2, "synthetic")]
    assert not (plain / "probe.jsonl").exists()
    for r in lines:
        assert r["boundaries"] == [5, 15] and r["horizons"] == [1, 2]
        assert r["synthesizers"] == ["toolkit"]
        share = r["mean"]["2"]["layers"]["all"]
        assert share["within_norm"] > 0 and share["discarded_norm"] > 0
    raw = json.loads((probed / "probe.jsonl").read_text().splitlines()[-1])
    assert summary_line(raw).startswith("probe epoch 2 (M = 2, boundaries [5, 15]): discarded")
    assert "; toolkit: cos " in summary_line(raw)
    # the weights moved between the epochs, so did what the probe measured
    assert lines[0]["mean"]["2"]["grad_norm"] != lines[1]["mean"]["2"]["grad_norm"]


def test_the_last_epochs_probe_equals_altgrad_probe_on_the_last_checkpoint(runs):
    run = runs[1]
    last = rows(run / "probe.jsonl")[-1]
    loaded = load_run(run, "last", device="cpu")
    report = probe_run(loaded, loaded.synthesizer, boundaries=[5, 15], max_horizon=2)
    assert report["synthesizers"] == last["synthesizers"]
    for m in ("1", "2"):
        want, got = report["mean"][m], last["mean"][m]
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-5)
        for k in ("within_norm", "discarded_norm", "cos"):
            assert got["layers"]["all"][k] == pytest.approx(want["layers"]["all"][k], rel=1e-4)
        for k in ("cos", "norm_ratio", "param_cos"):
            assert got["synthesizers"]["toolkit"][k] == pytest.approx(
                want["synthesizers"]["toolkit"][k], rel=1e-4, abs=1e-6
            )


def test_a_resumed_run_probes_each_epoch_once(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    recipe = tiny_recipe(data, tmp_path / "runs", synthetic=SYNTH, probe=PROBE)
    run = tmp_path / "runs" / "tiny"
    trainer = Trainer(recipe, run, hooks=[EpochProbe(recipe, run)])
    interrupt_at(trainer, epoch=2, segment=3)
    # a line the checkpoint does not cover, as a run killed between the probe and the save
    # would leave: the resume must drop it and probe epoch 2 again
    with open(run / "probe.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "stale": True}) + "\n")
    resumed = Trainer(recipe, run, hooks=[EpochProbe(recipe, run)])
    resumed.restore("last")
    resumed.fit()
    lines = rows(run / "probe.jsonl")
    assert [r["epoch"] for r in lines] == [1, 2]
    assert not any(r.get("stale") for r in lines)


def test_probe_boundaries_past_the_split_fail_before_training(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    recipe = tiny_recipe(data, tmp_path / "runs", probe={"every": 1, "boundaries": [5, 500]})
    run = tmp_path / "runs" / "tiny"
    with pytest.raises(UserError, match=r"probe\.boundaries: \[500\] out of range"):
        Trainer(recipe, run, hooks=[EpochProbe(recipe, run)])
    assert not (tmp_path / "runs" / "tiny" / "metrics.jsonl").exists()


def test_the_probe_is_refused_under_torchrun_and_off_by_default(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    recipe = tiny_recipe(data, tmp_path / "runs", probe={"every": 2})
    rows = SimpleNamespace(shape=(1000, 4))
    under_torchrun = SimpleNamespace(dist=DistContext(0, 2), parts=SimpleNamespace(train_data=rows))
    with pytest.raises(UserError, match=r"probe\.every: the probe runs in one process"):
        EpochProbe(recipe, tmp_path).attach(under_torchrun)
    probe = EpochProbe(recipe, tmp_path)
    assert [e for e in range(1, 7) if probe.due(e)] == [2, 4, 6]
    off = EpochProbe(tiny_recipe(data, tmp_path), tmp_path)
    off.attach(under_torchrun)  # off: nothing to refuse
    assert not any(off.due(e) for e in range(1, 7))


def test_a_recipe_that_asks_for_the_probe_needs_its_hook(tmp_path):
    """The trainer does not import the probe: a recipe with probe.every and no EpochProbe
    handed over is refused in one line, not trained without the probe."""
    data = tiny_corpus(tmp_path / "data")
    recipe = tiny_recipe(data, tmp_path / "runs", probe={"every": 1})
    with pytest.raises(UserError, match=r"probe\.every: needs the hook .*EpochProbe"):
        Trainer(recipe, tmp_path / "runs" / "tiny")
