"""TensorBoard: every metrics.jsonl number and the per-segment telemetry land in
RUN_DIR/tensorboard/, and a resumed run has each step once, with the values of a run that
never stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from altgrad_triton.errors import UserError
from altgrad_triton.run.train import Trainer
from tests.helpers import interrupt_at, tiny_corpus, tiny_recipe

SYNTH = {"enabled": True, "hidden": 6, "alternation": {"switch_epochs": [2]}}
BOARD = {"tensorboard": True, "log_every": 5, "epochs": 2}


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every tag's (step, value) pairs as TensorBoard shows them (restart purges applied)."""
    pytest.importorskip("tensorboard")  # the extra (in dev, so CI runs these)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


@pytest.fixture
def corpus_dir(tmp_path):
    return tiny_corpus(tmp_path / "data", n_train=150)


def recipe(corpus_dir, out, **run):
    return tiny_recipe(corpus_dir, out, run={**BOARD, **run}, synthetic=SYNTH)


def test_every_metrics_field_and_the_segment_telemetry_are_logged(corpus_dir, tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "a" / "tiny"
    trainer = Trainer(recipe(corpus_dir, tmp_path / "a"), run_dir)
    trainer.fit()
    tags = scalars(run_dir)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ends = [step for step, _ in tags["epoch/epoch"]]
    assert [int(v) for _, v in tags["epoch/epoch"]] == [1, 2] and ends == sorted(ends)
    for row, end in zip(rows, ends, strict=True):
        for key, value in row.items():
            if key == "mode":
                assert (end, float(value == "synthetic")) in tags["epoch/synthetic"]
            elif value is not None:
                got = dict(tags[f"epoch/{key}"])[end]
                assert got == pytest.approx(float(value), rel=1e-6), key
    steps = [s for s, _ in tags["train/loss"]]
    starts = [0, *ends]  # each epoch's train/* every 5 of its segments
    assert steps and steps[-1] <= ends[-1]
    assert all((s - max(b for b in starts if b < s)) % 5 == 0 for s in steps)
    assert [s for s, _ in tags["train/lr"]] == steps
    assert [s for s, _ in tags["train/sg_cos"]] == steps  # fitted in real mode too (default)


def test_a_resumed_run_logs_each_step_once_with_the_same_values(corpus_dir, tmp_path):
    pytest.importorskip("tensorboard")
    straight = tmp_path / "a" / "tiny"
    Trainer(recipe(corpus_dir, tmp_path / "a"), straight).fit()

    run_dir = tmp_path / "b" / "tiny"
    r = recipe(corpus_dir, tmp_path / "b")
    interrupt_at(Trainer(r, run_dir), epoch=1, segment=12)  # Ctrl-C inside epoch 1
    again = Trainer(r, run_dir)
    again.restore("last")
    keep = run_dir / "kept-last"
    shutil.copytree(run_dir / "checkpoints" / "last", keep)
    again.fit()
    # a crash after epoch 2 logged its segments and line, before its checkpoint: back to
    # the checkpoint inside epoch 1, and once more to the end
    shutil.rmtree(run_dir / "checkpoints" / "last")
    shutil.copytree(keep, run_dir / "checkpoints" / "last")
    third = Trainer(r, run_dir)
    third.restore("last")
    third.fit()

    want, got = scalars(straight), scalars(run_dir)
    assert set(got) == set(want)
    for tag in want:
        steps = [s for s, _ in got[tag]]
        assert len(steps) == len(set(steps)), f"{tag}: duplicate steps"
        if tag != "epoch/seconds" and tag != "epoch/tokens_per_s":  # wall-clock
            assert got[tag] == want[tag], tag


def test_a_missing_package_is_one_line_before_training(corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(UserError, match=r"run.tensorboard: needs the tensorboard package"):
        Trainer(recipe(corpus_dir, tmp_path), tmp_path / "tiny")
    assert not (tmp_path / "tiny").exists()


def test_the_flag_sets_the_key_and_a_missing_package_is_one_line(corpus_dir, tmp_path):
    code = (
        "import sys; sys.modules['torch.utils.tensorboard'] = None\n"
        "from altgrad_triton.cli.train import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(
        f'[data]\ncorpus = "text"\npath = "{corpus_dir}"\n[run]\ndevice = "cpu"\n'
        f'out_dir = "{tmp_path}"\n[model]\nemb_size = 8\nhidden_size = 8\nlayers = 1\n'
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(recipe_file), "--tensorboard"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'altgrad-triton[tensorboard]'" in lines[0]
