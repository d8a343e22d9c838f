"""The suite (``experiments/suite.py``): planning, skip/resume logic, packaged folders by
name, and stop signals reaching the run exactly once (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from altgrad_triton.errors import UserError
from altgrad_triton.experiments import suite
from tests.helpers import suite_folder


@pytest.fixture
def folder(tmp_path):
    return suite_folder(tmp_path)


def test_plan_names_seeds_and_skips_bases(folder, tmp_path):
    runs = suite.plan(folder, [1, 2], tmp_path / "out", ["data.path=/data"])
    assert [r.name for r in runs] == ["exp-a-s1", "exp-a-s2", "exp-b-s1", "exp-b-s2"]
    r = runs[1]
    assert r.seed == 2 and r.run_dir == tmp_path / "out" / "exp-a-s2"
    assert r.overrides[0] == "data.path=/data"
    assert "run.seed=2" in r.overrides and "run.name=exp-a-s2" in r.overrides
    assert r.command()[-len(r.overrides) :] == list(r.overrides)


def test_only_filters(folder, tmp_path):
    runs = suite.plan(folder, [1], tmp_path / "out", only="*-b")
    assert [r.name for r in runs] == ["exp-b-s1"]
    with pytest.raises(UserError, match="matches no recipe"):
        suite.plan(folder, [1], tmp_path / "out", only="zzz")


def test_bad_recipe_fails_before_training(folder, tmp_path):
    (folder / "c.toml").write_text('extends = "_base.toml"\nrun.name = "c"\noptim.lr = -1\n')
    with pytest.raises(UserError) as e:
        suite.plan(folder, [1], tmp_path / "out")
    assert str(e.value) == f"{folder / 'c.toml'}: invalid recipe: optim.lr: must be > 0, got -1.0"


def test_skip_and_resume(folder, tmp_path):
    out = tmp_path / "out"
    done = out / "exp-a-s1"
    done.mkdir(parents=True)
    (done / "results.json").write_text(json.dumps({"best_val_loss": 1.0}))
    interrupted = out / "exp-b-s1"
    (interrupted / "checkpoints" / "last").mkdir(parents=True)
    (interrupted / "checkpoints" / "last" / "meta.json").write_text("{}")
    # stopped while its first checkpoint was written: nothing to resume, so started afresh
    stranded = out / "exp-a-s2"
    (stranded / "checkpoints" / ".best.tmp").mkdir(parents=True)
    runs = suite.plan(folder, [1, 2], out)
    assert [r.status for r in runs] == ["done", "run", "resume", "run"]
    assert runs[2].command()[-2:] == ["--resume", str(interrupted)]
    calls = []
    failed = suite.execute(runs, echo=lambda s: None, runner=lambda cmd: calls.append(cmd) or 0)
    assert failed == []
    assert len(calls) == 3  # the finished run was skipped
    assert "--resume" in calls[1]


def test_failure_continues_and_interrupt_stops(folder, tmp_path):
    runs = suite.plan(folder, [1], tmp_path / "out")
    assert [r.name for r in suite.execute(runs, echo=lambda s: None, runner=lambda cmd: 1)] == [
        "exp-a-s1",
        "exp-b-s1",
    ]
    with pytest.raises(UserError, match="same command again"):
        suite.execute(runs, echo=lambda s: None, runner=lambda cmd: 130)


def test_evidence_recipes_resolve():
    folder = Path(__file__).resolve().parents[2] / "recipes" / "evidence"
    runs = suite.plan(folder / "wt2", [1, 2, 3], "runs/evidence")
    runs += suite.plan(folder / "shakespeare", [1, 2, 3], "runs/evidence", ["data.path=in.txt"])
    schedules = ["alt-restarts", "alt-restarts-cdni", "bptt", "bptt-restarts"]
    schedules += ["sg", "sg-cdni", "sg-restarts"]
    expected = {
        f"{corpus}-{s}-t{t}-s{seed}"
        for corpus, ts in (("wt2", (10, 35)), ("shakespeare", (25, 100)))
        for s in schedules
        for t in ts
        for seed in (1, 2, 3)
    }
    assert sorted(r.name for r in runs) == sorted(expected)


# A stand-in for altgrad-train: counts the SIGINTs it gets (a doubled Ctrl-C would arrive
# within the pause), writes the count, exits 130 as altgrad-train does after saving.
FAKE_TRAINING = r"""
import signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda s, f: got.append(s))
print("ready", flush=True)
deadline = time.monotonic() + 30
while not got and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.5)
open(sys.argv[1], "w").write(str(len(got)))
sys.exit(130 if got else 0)
"""

SUITE_SIDE = r"""
import sys
from altgrad_triton import suite
print("code", suite.run_training([sys.executable, "-c", sys.argv[1], sys.argv[2]]), flush=True)
"""


def start_suite(training: str, path, **popen):
    """``run_training`` of a stand-in ``training`` script in a process group of its own (as a
    shell gives a foreground job), its stdout piped."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", SUITE_SIDE, training, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
        **popen,
    )


@pytest.mark.parametrize(
    "how", ["ctrl-c to the foreground group", "SIGINT to the suite", "SIGTERM to the suite"]
)
def test_stop_signal_reaches_the_run_exactly_once(tmp_path, how):
    import os
    import signal

    count = tmp_path / "sigints"
    proc = start_suite(FAKE_TRAINING, count)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if how.startswith("ctrl-c"):
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal does
        else:
            os.kill(proc.pid, signal.SIGINT if "SIGINT" in how else signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert out.strip() == "code 130"
    assert count.read_text() == "1"


# A stand-in for altgrad-train that is still loading its data (no SIGINT handler of its own
# yet) for longer than the test waits; it marks the file if it ever gets past that.
SLOW_STARTER = r"""
import sys, time
print("loading", flush=True)
time.sleep(20)
open(sys.argv[1], "w").write("loaded")
"""


def test_interrupt_stops_a_suite_started_with_sigint_ignored(tmp_path):
    """`altgrad-suite ... &` in a script starts the suite with SIGINT ignored; its child
    used to inherit "ignored" and ran on until it installed a handler of its own."""
    import signal
    import time

    marker = tmp_path / "marker"
    proc = start_suite(  # with SIGINT ignored, as `cmd &` in a script starts it
        SLOW_STARTER, marker, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    )
    try:
        assert proc.stdout.readline().strip() == "loading"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        proc.kill()
    assert out.strip() == "code 130"
    assert not marker.exists()  # the child stopped while loading, it did not run on
    assert waited < 15  # against the 20 s the child would otherwise take


ROOT = Path(__file__).resolve().parents[2]


def test_a_suite_takes_a_packaged_folder_by_name(tmp_path, monkeypatch):
    from altgrad_triton.experiments import suite

    monkeypatch.chdir(tmp_path)
    by_name = suite.plan("evidence/wt2", [1], "runs")
    by_path = suite.plan(ROOT / "recipes" / "evidence" / "wt2", [1], "runs")
    assert [r.name for r in by_name] == [r.name for r in by_path] and len(by_name) == 14
    with pytest.raises(UserError, match="evidence/wt3: no such recipe folder, nor a packaged"):
        suite.plan("evidence/wt3", [1], "runs")
