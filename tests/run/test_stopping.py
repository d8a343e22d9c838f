"""How a run stops on a signal (``run/stopping.py``): a preempted run (SIGTERM, SIGHUP) saves,
exits with its signal and resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from altgrad_triton import files
from altgrad_triton.config import recipe as recipes
from tests.helpers import tiny_corpus, tiny_recipe

ROOT = Path(__file__).resolve().parents[2]


def train_process(recipe_file: Path, *args: str, **popen) -> subprocess.Popen:
    """altgrad-train on ``recipe_file`` in a process of its own, one CPU thread."""
    return subprocess.Popen(
        [sys.executable, "-m", "altgrad_triton.cli.train", str(recipe_file), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **popen,
    )


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields."""
    rows = files.read_jsonl(run_dir / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s")} for r in rows]


@pytest.fixture(scope="module")
def preemption(tmp_path_factory):
    """A recipe whose epochs take a second or two, and its run trained without a stop."""
    tmp = tmp_path_factory.mktemp("preemption")
    data = tiny_corpus(tmp / "data", n_train=1500)
    r = tiny_recipe(data, tmp / "runs", run={"threads": 1, "log_every": 1, "epochs": 2})
    (tmp / "tiny.toml").write_text(recipes.to_toml(r))
    straight = train_process(tmp / "tiny.toml", "run.name=straight")
    out, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err
    return tmp, metric_rows(tmp / "runs" / "straight")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_preempted_run_saves_exits_with_its_signal_and_resumes_exactly(preemption, sig):
    tmp, straight = preemption
    name = f"stopped-{sig.name}"
    run = tmp / "runs" / name
    proc = train_process(tmp / "tiny.toml", f"run.name={name}")
    assert proc.stdout is not None
    for line in proc.stdout:  # the third segment of epoch 1 is trained: training is on
        if " 3/" in line:
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"{sig.name}: stopping after this segment to save" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"stopped: interrupted by {sig.name} at epoch 1, segment ")
    assert lines[0].endswith(f"; saved. Continue with: altgrad-train --resume {run}")
    assert (run / "checkpoints" / "last" / "meta.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.train", "--resume", str(run)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert metric_rows(run) == straight
