"""altgrad-tune on a CPU: the no-GPU error, the dry run, and one line for each bad option."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from altgrad_triton.cli import tune as tune_cli

pytestmark = pytest.mark.usefixtures("no_kernel_overrides")

REPO = Path(__file__).resolve().parents[2]
WT2 = REPO / "recipes" / "wt2.toml"


# ----------------------------------------------------------------------------- no GPU


def test_tune_without_gpu_exits_2_with_one_line():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.tune", str(WT2)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "GPU" in lines[0]
    assert proc.stdout == ""


def test_tune_main_without_gpu_in_process(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tune_cli.main([str(WT2), "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]


def test_dry_run_lists_launches_and_keys_without_gpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    assert tune_cli.main([str(WT2), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for text in (
        "fo_pool_fwd",
        "fo_pool_bwd",
        "sg_loss",
        "elementwise_fwd",
        "elementwise_bwd",
        "('float32', 32768)",
        "('float32', 8192)",
        "('float32', 131072, 64)",
    ):
        assert text in out, text
    # without a GPU the compile count is an estimate, and says so
    assert "configs" in out and "distinct configs to compile" in out


def test_bad_shape_specs_are_one_line_errors(capsys):
    assert tune_cli.main(["--shapes", "fo_pool:B=20,T=200", "--dry-run"]) == 2
    assert "missing ['H']" in capsys.readouterr().err
    assert tune_cli.main(["--shapes", "nope:N=3", "--dry-run"]) == 2
    assert tune_cli.main(["--dry-run"]) == 2
    assert tune_cli.main([str(WT2), "--kernels", "bogus", "--dry-run"]) == 2


def test_timer_options_must_be_finite_and_in_range(capsys):
    assert tune_cli.main([str(WT2), "--warmup", "-1", "--dry-run"]) == 2
    assert "--warmup: must be a finite number >= 0, got '-1'" in capsys.readouterr().err
    assert tune_cli.main([str(WT2), "--rep", "nan", "--dry-run"]) == 2
    assert "--rep: must be a finite number > 0, got 'nan'" in capsys.readouterr().err


def test_dry_run_names_the_architecture_it_counts_candidates_for(capsys, monkeypatch):
    """Without a GPU the candidates are those every supported architecture offers, and the
    caption says so; --arch counts one architecture's (an sm_86 offers fewer LSTM tiles at
    sm_90's stage counts than an sm_90)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["--shapes", "lstm:B=20,T=8,H=1550", "--dry-run"]
    assert tune_cli.main(args) == 0
    assert "candidates for every supported architecture: those each" in capsys.readouterr().out
    counts = {}
    for arch in ("sm_86", "sm_90"):
        assert tune_cli.main([*args, "--arch", arch]) == 0
        out = capsys.readouterr().out
        assert f"candidates for {arch} (--arch)" in out
        counts[arch] = out
    assert counts["sm_86"] != counts["sm_90"]


def test_check_configs_options_are_checked(capsys):
    for argv, text in (
        (["--check-configs", "--arch", "sm_75"], "supported: sm_80, sm_86, sm_89, sm_90"),
        (["--check-configs", str(WT2), "--record", "x"], "--record needs the full check"),
        (["--check-configs", "--arch", "sm_90", "--record", "x"], "--record needs the full"),
        ([str(WT2), "--record", "x"], "--record goes with --check-configs"),
        ([str(WT2), "--arch", "sm_86"], "--arch goes with --check-configs or --dry-run"),
        ([str(WT2), "--dry-run", "--arch", "sm_86,sm_90"], "one --arch at a time"),
    ):
        assert tune_cli.main(argv) == 2, argv
        assert text in capsys.readouterr().err, argv


# ----------------------------------------------------------------------------- help


def test_the_quick_help_states_the_quick_limits():
    from altgrad_triton.tune.jobs import QUICK_LSTM_STEPS
    from altgrad_triton.tune.sweeping import QUICK_CANDIDATES, QUICK_EVAL_CANDIDATES

    text = " ".join(tune_cli.parser().format_help().split())
    assert (
        f"at most {QUICK_CANDIDATES} candidates per kernel ({QUICK_EVAL_CANDIDATES} per "
        f"validation/test forward), LSTM timed over <= {QUICK_LSTM_STEPS} steps" in text
    )
