"""Data-parallel training under torchrun (gloo on the CPU, two ranks on 127.0.0.1).

The two-rank runs start ``python -m torch.distributed.run`` on this very file: run as a
script (``__main__`` at the bottom) it is the per-rank program. Each launch is bounded
by a subprocess timeout and a short collective timeout, so nothing here can hang CI.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # as a torchrun script, this file's folder is sys.path[0]
    sys.path.insert(0, str(ROOT))

from altgrad_triton.config import recipe as recipes  # noqa: E402
from altgrad_triton.core.carry import join_state  # noqa: E402
from altgrad_triton.core.synthesizers import ToolkitElementwiseSynthesizer  # noqa: E402
from altgrad_triton.errors import UserError  # noqa: E402
from altgrad_triton.run import distributed  # noqa: E402
from altgrad_triton.run.checkpoint.checkpointer import Checkpointer  # noqa: E402
from altgrad_triton.run.train import Trainer, TrainingStopped  # noqa: E402
from tests.helpers import tiny_corpus, tiny_recipe  # noqa: E402

NO_DROPOUT = {
    "dropout": {"input": 0.0, "hidden": 0.0, "output": 0.0, "embedding": 0.0, "weight": 0.0}
}
LINEAR_SG = {"enabled": True, "synthesizer": "linear", "alternation": {"start": "synthetic"}}
ELEMENTWISE_SG = {
    "enabled": True,
    "synthesizer": "toolkit",
    "hidden": 6,
    "alternation": {"start": "real", "switch_epochs": [2], "switch_at_restarts": True},
}
RESTARTS = {"kind": "cosine_restarts", "periods": [1, 2]}
COLLECTIVE_TIMEOUT_S = 20  # per collective, in the two-rank runs
LAUNCH_TIMEOUT_S = 120  # per torchrun launch, whatever happens
PREEMPT_AT_SEGMENT = 20  # inside epoch 1
CRASH_AT_SEGMENT = 75  # rank 1 dies here: epoch 1 has 65 segments, so inside epoch 2


def scenarios(data: Path, out: Path) -> dict[str, recipes.Recipe]:
    """The runs both the two-rank launch and the single-process reference make."""
    return {
        # plain SGD without clipping: any error in the gradient's scale shows in the weights
        # (Adam and clipping would hide it); test batch 1 does not divide by 2 ranks: every
        # rank tests the whole split and rank 0's number is kept
        "real": tiny_recipe(
            data,
            out / "real",
            run={"epochs": 1},
            model=NO_DROPOUT,
            optim={"name": "sgd", "lr": 2.0, "clip": 0.0},
            data={"test_batch_size": 1},
        ),
        "synthetic": tiny_recipe(
            data, out / "synthetic", run={"epochs": 1}, model=NO_DROPOUT, synthetic=LINEAR_SG
        ),
        # dropout on, element-wise synthesizer with noise: exact resume needs every rank's
        # carried state, synthesizer carry and RNG stream back
        "straight": tiny_recipe(
            data, out / "straight", synthetic=ELEMENTWISE_SG, schedule=RESTARTS
        ),
        "resumed": tiny_recipe(data, out / "resumed", synthetic=ELEMENTWISE_SG, schedule=RESTARTS),
    }


# ---------------------------------------------------------------------------- launching


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: object, timeout: float = LAUNCH_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2`` on 127.0.0.1, a free port, one CPU thread per rank."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        distributed.TIMEOUT_ENV: str(COLLECTIVE_TIMEOUT_S),
        "GLOO_SOCKET_IFNAME": "lo",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "--max-restarts",
        "0",
        "--monitor-interval",
        "0.1",
        *map(str, args),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def params(run_dir: Path, what: str = "model") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last" / f"{what}.safetensors"))


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # wall-clock fields differ between runs
        r.pop("seconds")
        r.pop("tokens_per_s")
    return rows


def assert_close_params(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


def assert_close_rows(got: list[dict], want: list[dict], rtol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k, v in w.items():
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=rtol, abs=1e-7), k
            else:
                assert g[k] == v, k


# ---------------------------------------------------------------------------- no processes


def test_batch_size_must_divide_by_world_size(tmp_path):
    with pytest.raises(
        UserError,
        match=r"data\.batch_size: 4 does not divide by the world "
        r"size 3 .* data\.batch_size=3",
    ):
        distributed.check_divisible(4, 3)
    distributed.check_divisible(4, 2)
    # the CLI says so in one line before it joins any process group (nothing waits)
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs")
    (tmp_path / "r.toml").write_text(recipes.to_toml(r))
    env = {**os.environ, "WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.train", tmp_path / "r.toml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data.batch_size: 4 "), proc.stderr
    assert "world size 3" in lines[0]


def test_rank_shares_rebuild_the_single_process_layout():
    """Columns per rank; gathered state and element-wise carry rows join in rank order."""
    world, batch, steps = 2, 4, 6
    batched = torch.arange(batch * steps).view(batch, steps).t()  # [steps, batch]
    ranks = [distributed.DistContext(rank=r, world_size=world) for r in range(world)]
    cols = [distributed.columns(batched, c) for c in ranks]
    assert torch.equal(torch.cat(cols, dim=1), batched)
    assert cols[1][:, 0].tolist() == batched[:, 2].tolist()

    # an LSTM-like state (h, c) per rank, and the element-wise synthesizer's carry on it,
    # after one step (a tuple of rows) and shared out for a second one
    torch.manual_seed(1)
    state = (torch.randn(batch, 3), torch.randn(batch, 3))
    synth = ToolkitElementwiseSynthesizer("lstm", hidden=5, dropout=0.0, input_noise=0.0).eval()
    for p in synth.parameters():
        torch.nn.init.normal_(p)
    _, carry1 = synth(join_state(state), None)
    g_full, carry_full = synth(join_state(state), carry1)
    per_rank = []
    for c in ranks:
        mine = distributed.share_rows(state, c)
        g, carry = synth(join_state(mine), distributed.share_rows(carry1, c))
        torch.testing.assert_close(g, distributed.share(g_full, c))
        per_rank.append((mine, carry))
    joined_state = distributed.join_rows([s for s, _ in per_rank])
    joined_carry = distributed.join_rows([c for _, c in per_rank])
    for a, b in zip(joined_state, state, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(joined_carry, carry_full, strict=True):
        torch.testing.assert_close(a, b)
    assert distributed.share_rows(None, ranks[1]) is None


def test_teardown_frees_a_dropped_trainers_model(tmp_path):
    """A Trainer may sit in reference cycles (closures over itself; seen run alone, with
    gc off, as a model that outlives ``del``): teardown's collection frees such a trainer
    (and, under torchrun, its DDP wrapper) while the interpreter is whole, not at its
    shutdown. The cycle is made explicit here so that the check holds wherever it runs."""
    import gc
    import weakref

    gc.disable()  # as if no automatic collection happened since the run ended
    try:
        r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path, run={"max_batches": 2})
        trainer = Trainer(r, tmp_path / "tiny")
        trainer.fit()
        model = weakref.ref(trainer.parts.model)
        trainer.itself = trainer  # a reference cycle
        del trainer
        assert model() is not None  # the cycle keeps it
        distributed.teardown()
        assert model() is None
    finally:
        gc.enable()


def test_timeout_option_and_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT_S == 600
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "12.5")
    assert distributed.timeout_seconds() == 12.5
    assert distributed.timeout_seconds(3) == 3
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match="ALTGRAD_DIST_TIMEOUT: must be a number"):
        distributed.timeout_seconds()
    with pytest.raises(UserError, match="--dist-timeout: must be > 0"):
        distributed.timeout_seconds(0)


# ---------------------------------------------------------------------------- two ranks


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """One torchrun launch that makes every run of ``scenarios`` on two ranks."""
    root = tmp_path_factory.mktemp("ddp")
    data = tiny_corpus(root / "data")
    t0 = time.perf_counter()
    proc = torchrun(Path(__file__), "scenarios", data, root / "ddp")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return data, root, proc, time.perf_counter() - t0


@pytest.mark.parametrize("name", ["real", "synthetic"])
def test_two_ranks_train_the_same_weights_as_one_process(two_rank_runs, name):
    data, root, _, _ = two_rank_runs
    recipe = scenarios(data, root / "single")[name]
    single = Trainer(recipe, root / "single" / name / "tiny")
    single.fit()
    two = root / "ddp" / name / "tiny"
    assert_close_params(params(two), params(root / "single" / name / "tiny"))
    if name == "synthetic":
        assert params(two, "synthesizer")["out.weight"].abs().sum() > 0  # the SG was active
        assert_close_params(
            params(two, "synthesizer"), params(root / "single" / name / "tiny", "synthesizer")
        )
        assert metric_rows(two)[0]["mode"] == "synthetic"
    # train loss, SG loss and cos, val loss: the global numbers (sg_norm_ratio is a mean of
    # the per-rank ratios, so only close)
    got, want = metric_rows(two), metric_rows(root / "single" / name / "tiny")
    for row in got + want:
        row.pop("sg_norm_ratio")
    assert_close_rows(got, want)


def test_two_rank_evaluation_equals_one_process_on_the_same_weights(two_rank_runs):
    data, root, _, _ = two_rank_runs
    two = root / "ddp" / "real" / "tiny"
    recipe = scenarios(data, root / "eval")["real"]
    trainer = Trainer(recipe, root / "eval" / "tiny")
    trainer.parts.model.load_state_dict(params(two))
    corpus = trainer.parts.corpus
    val = trainer.parts.evaluate(
        corpus.valid, recipe.data.eval_batch_size, trainer.dist
    )  # split by ranks
    test = trainer.parts.evaluate(
        corpus.test, recipe.data.test_batch_size, trainer.dist
    )  # rank 0's
    assert metric_rows(two)[0]["val_loss"] == pytest.approx(val, rel=1e-6)
    results = json.loads((two / "results.json").read_text())
    assert results["test_loss"] == pytest.approx(test, rel=1e-6)


def test_a_two_rank_run_loads_and_scores_in_one_process(two_rank_runs):
    """load_run reads a torchrun checkpoint (the whole model) in a single process; its
    scores are the ones the two ranks logged."""
    from altgrad_triton import load_run

    _, root, _, _ = two_rank_runs
    two = root / "ddp" / "real" / "tiny"
    run = load_run(two)
    test = run.score(run.split("test"), batch_size=1)  # every rank tested all of it
    valid = run.score(run.split("valid"), batch_size=2)  # the ranks split these columns
    assert test.loss == pytest.approx(json.loads((two / "results.json").read_text())["test_loss"])
    assert valid.loss == pytest.approx(metric_rows(two)[0]["val_loss"], rel=1e-6)


def test_two_rank_run_resumes_an_interrupted_epoch_exactly(two_rank_runs):
    _, root, proc, seconds = two_rank_runs
    straight, resumed = root / "ddp" / "straight" / "tiny", root / "ddp" / "resumed" / "tiny"
    assert "interrupted at epoch 2" in proc.stdout  # rank 0's own report of the stop
    assert metric_rows(resumed) == metric_rows(straight)
    assert_close_params(params(resumed), params(straight))
    st = torch.load(straight / "checkpoints" / "last" / "trainer.pt", weights_only=False)
    assert st["world_size"] == 2 and len(st["rank_rng"]) == 2
    assert not torch.equal(st["rank_rng"][0][0], st["rank_rng"][1][0])  # own dropout streams
    # only rank 0 wrote: one metrics line per epoch
    assert len((straight / "metrics.jsonl").read_text().splitlines()) == 2
    print(f"two-rank launch: {seconds:.1f} s")


def test_a_dead_rank_ends_the_job_and_the_last_checkpoint_resumes(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    r = tiny_recipe(data, tmp_path / "runs", model=NO_DROPOUT)
    (tmp_path / "r.toml").write_text(recipes.to_toml(r))
    run = tmp_path / "runs" / "tiny"
    crashed_at = tmp_path / "crashed_at"
    proc = torchrun(Path(__file__), "crash", crashed_at, tmp_path / "r.toml")
    ended = time.time()
    assert proc.returncode != 0
    assert crashed_at.exists(), proc.stderr[-3000:]
    # rank 0 is out within the collective timeout (usually at once: gloo sees the closed
    # connection, or torchrun's SIGTERM), with one line that says what happened
    assert ended - float(crashed_at.read_text()) < COLLECTIVE_TIMEOUT_S, proc.stderr[-3000:]
    ours = [x for x in proc.stderr.splitlines() if x.startswith("error: rank 0: ")]
    assert len(ours) == 1, proc.stderr[-3000:]
    assert "lost contact" in ours[0] or "SIGTERM" in ours[0]
    assert f"--resume {run}" in ours[0]
    # epoch 1's checkpoint is whole, and two ranks resume from it
    saved = Checkpointer(run).load("last")
    assert saved.meta["epoch"] == 2 and saved.trainer.run.carried is None
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    # resumed through the installed script this time: `torchrun $(which altgrad-train) ...`
    script = Path(sys.executable).parent / "altgrad-train"
    launch = [script] if script.exists() else ["-m", "altgrad_triton.cli.train"]
    proc = torchrun(*launch, "--resume", run)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # Seen once in 6 runs on a loaded 2-core machine: a gloo rank aborted in C++ (no
        # Python error) during the resumed launch. Not understood yet; the checkpoint must
        # still be intact, so one more launch has to resume it.
        proc = torchrun(*launch, "--resume", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [row["epoch"] for row in metric_rows(run)] == [1, 2]
    # ... and ends where one process going straight through ends
    single = tmp_path / "single"
    Trainer(tiny_recipe(data, single, model=NO_DROPOUT), single / "tiny").fit()
    assert_close_params(params(run), params(single / "tiny"))


def test_a_preempted_torchrun_job_saves_and_resumes_as_one_process_trains(tmp_path):
    """SIGTERM to torchrun's agent (what SLURM or Kubernetes sends), which sends it on to
    every rank: they stop at the same segment, rank 0 saves, and a resume trains on."""
    data = tiny_corpus(tmp_path / "data")
    r = tiny_recipe(data, tmp_path / "runs", model=NO_DROPOUT)
    (tmp_path / "r.toml").write_text(recipes.to_toml(r))
    run = tmp_path / "runs" / "tiny"
    proc = torchrun(Path(__file__), "preempt", tmp_path / "r.toml")
    ours = [x for x in proc.stderr.splitlines() if x.startswith("error: rank 0: ") or
            x.startswith("stopped: interrupted")]  # fmt: skip
    assert len(ours) == 1, proc.stderr[-3000:]
    assert ours[0].startswith("stopped: interrupted by SIGTERM at epoch 1, segment "), ours
    assert ours[0].endswith(f"torchrun ... -m altgrad_triton.cli.train --resume {run}")
    # inside epoch 1, which the resume finishes
    assert Checkpointer(run).load("last").meta["epoch"] == 1
    proc = torchrun("-m", "altgrad_triton.cli.train", "--resume", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = tmp_path / "single"
    Trainer(tiny_recipe(data, single, model=NO_DROPOUT), single / "tiny").fit()
    assert_close_rows(metric_rows(run), metric_rows(single / "tiny"))


@pytest.mark.parametrize("late, other", [(0, "next"), (1, "same")])
def test_ranks_agree_on_a_sigterm_that_lands_after_the_segments_agreement(tmp_path, late, other):
    """torchrun's agent signals the ranks one after the other, so one rank's SIGTERM may
    land after its segment's stop agreement (here: right after it, every time) while the
    other rank's came before that agreement ("same") or comes a segment later ("next").
    Every rank must still stop after one and the same segment, and rank 0 save it: no rank
    saves alone while the other trains on (a collective waits for ever: "late rank 0,
    next" is the timeout seen on a loaded machine), and no rank takes the stop it agreed
    to plus its own signal for a second request, which aborts without saving."""
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", model=NO_DROPOUT)
    (tmp_path / "r.toml").write_text(recipes.to_toml(r))
    run = tmp_path / "runs" / "tiny"
    proc = torchrun(Path(__file__), "late_sigterm", late, other, tmp_path / "r.toml")
    assert proc.returncode != 0
    errors = [x for x in proc.stderr.splitlines() if x.startswith(("error: ", "stopped: "))]
    stop = PREEMPT_AT_SEGMENT + (other == "next")
    assert errors == [
        f"stopped: interrupted by SIGTERM at epoch 1, segment {stop}; saved. "
        f"Continue with: torchrun ... -m altgrad_triton.cli.train --resume {run}"
    ], proc.stderr[-3000:]
    saved = Checkpointer(run).load("last")
    assert saved.meta["epoch"] == 1 and saved.trainer.run.sums.segment == stop
    # both ranks left the process group as after a finished run (a group left to the
    # interpreter's shutdown can abort a rank that saved everything) and exit as signalled
    for rank in (0, 1):
        assert f"rank {rank}: process group left" in proc.stdout, proc.stdout[-2000:]
    assert set(re.findall(r"exitcode\s*:\s*(-?\d+)", proc.stderr)) == {"143"}, proc.stderr


def test_a_stuck_rank_times_out_instead_of_hanging(tmp_path):
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", model=NO_DROPOUT)
    (tmp_path / "r.toml").write_text(recipes.to_toml(r))
    stuck_at = tmp_path / "stuck_at"
    proc = torchrun(Path(__file__), "stuck", stuck_at, tmp_path / "r.toml", "--dist-timeout", 8)
    ended = time.time()
    assert proc.returncode != 0
    waited = ended - float(stuck_at.read_text())
    # the timeout, then the teardown: torchrun's SIGTERM asks the stuck rank to finish its
    # segment and save (a preempted job's grace), so it may take up to the grace to end
    assert 8 <= waited < 8 + distributed.SIGTERM_GRACE_S + 15, proc.stderr[-3000:]
    ours = [x for x in proc.stderr.splitlines() if x.startswith("error: rank 0: ")]
    assert len(ours) == 1 and "lost contact" in ours[0] and "8 s" in ours[0], proc.stderr[-3000:]


# ---------------------------------------------------------------------------- per rank


def _rank_scenarios(data: Path, out: Path) -> None:
    ctx = distributed.setup(torch.device("cpu"), distributed.timeout_seconds())
    runs = scenarios(data, out)
    for name in ("real", "synthetic", "straight"):
        Trainer(runs[name], out / name / "tiny", dist=ctx).fit()
    run_dir = out / "resumed" / "tiny"
    trainer = Trainer(runs["resumed"], run_dir, dist=ctx)
    calls = {"n": 0}
    real_segment = trainer.train_segment

    def segment_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 80 and ctx.rank == 0:  # rank 0 alone: the stop must reach rank 1
            trainer.stops.request()
        return real_segment(*args, **kwargs)

    trainer.train_segment = segment_then_ctrl_c
    try:
        trainer.fit()
        raise AssertionError("the run was not interrupted")
    except TrainingStopped as e:
        if ctx.is_main:
            print(f"rank 0: {e}")
    again = Trainer(runs["resumed"], run_dir, dist=ctx)
    again.restore("last")
    carried = again.run_state.carried
    assert again.run_state.sums.segment > 0 and carried is not None
    assert carried[0].shape[0] == runs["resumed"].data.batch_size // 2
    again.fit()
    trainer = again = real_segment = None  # for teardown to free their DDP wrappers
    distributed.teardown()


def _rank_crash(crashed_at: Path, cli_args: list[str], stuck: bool = False) -> int:
    """The CLI on every rank; rank 1 dies (or gets stuck) inside epoch 2."""
    from altgrad_triton.cli import train as cli

    if os.environ["RANK"] == "1":
        real_segment = Trainer.train_segment
        calls = {"n": 0}

        def segment_or_die(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == CRASH_AT_SEGMENT:
                crashed_at.write_text(str(time.time()))
                if stuck:
                    time.sleep(LAUNCH_TIMEOUT_S)  # alive, but never answers
                os._exit(9)  # no message, no cleanup: as if killed
            return real_segment(self, *args, **kwargs)

        Trainer.train_segment = segment_or_die
    return cli.main(cli_args)


def _rank_preempted(cli_args: list[str]) -> int:
    """The CLI on every rank; rank 0 sends SIGTERM to torchrun's agent inside epoch 1."""
    import signal

    from altgrad_triton.cli import train as cli

    if os.environ["RANK"] == "0":
        real_segment = Trainer.train_segment
        calls = {"n": 0}

        def segment_then_preempt(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == PREEMPT_AT_SEGMENT:
                os.kill(os.getppid(), signal.SIGTERM)
            return real_segment(self, *args, **kwargs)

        Trainer.train_segment = segment_then_preempt
    return cli.main(cli_args)


def _rank_late_sigterm(late: int, other: str, cli_args: list[str]) -> int:
    """The CLI on every rank; each sends itself SIGTERM: rank ``late`` right after the
    agreement of segment PREEMPT_AT_SEGMENT, the other rank before the agreement of that
    segment (``other="same"``) or of the next one (``"next"``)."""
    import signal

    from altgrad_triton.cli import train as cli

    is_late = int(os.environ["RANK"]) == late
    at = PREEMPT_AT_SEGMENT + (other == "next" and not is_late)
    real_segment = Trainer.train_segment
    calls = {"n": 0}

    def segment_then_sigterm(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at and not is_late:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at once: before the agreement
        out = real_segment(self, *args, **kwargs)
        if calls["n"] == at and is_late:
            os.kill(os.getpid(), signal.SIGTERM)  # after it, before the stop is looked at
        return out

    Trainer.train_segment = segment_then_sigterm
    code = cli.main(cli_args)
    joined = torch.distributed.is_initialized()
    print(f"rank {os.environ['RANK']}: process group {'still joined' if joined else 'left'}")
    return code


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, *rest = sys.argv[1:]
    if mode == "scenarios":
        _rank_scenarios(Path(rest[0]), Path(rest[1]))
    elif mode == "preempt":
        sys.exit(_rank_preempted(rest))
    elif mode == "late_sigterm":
        sys.exit(_rank_late_sigterm(int(rest[0]), rest[1], rest[2:]))
    elif mode in ("crash", "stuck"):
        sys.exit(_rank_crash(Path(rest[0]), rest[1:], stuck=mode == "stuck"))
    else:
        sys.exit(f"unknown mode {mode}")
