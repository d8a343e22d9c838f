"""scripts/gpu-check.sh without a GPU: its syntax, its no-pip install fallback (the shim
site dir), its step limits adding up to what its header says (the cold first run fits
480 s), and its tests step writing a summary even when pytest is killed at the limit before
printing its own."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check.sh"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="needs bash")


def test_gpu_check_script_syntax():
    bash = shutil.which("bash")
    assert bash, "bash is needed to run scripts/gpu-check.sh (and .ci/run)"
    subprocess.run([bash, "-n", str(SCRIPT)], check=True)


def test_gpu_check_install_fallback_shim(tmp_path):
    """The no-pip fallback links the package and kernels/ into a temp site dir and checks that
    altgrad_triton.kernels is imported from there."""
    bash = shutil.which("bash")
    assert bash, "bash is needed to run scripts/gpu-check.sh (and .ci/run)"
    env = dict(
        os.environ,
        OUT=str(tmp_path / "out"),
        ALTGRAD_FORCE_SHIM="1",
        PYTHON=os.environ.get("PYTHON", "") or _python(),
    )
    proc = subprocess.run(
        [bash, str(SCRIPT), "--install-only"], capture_output=True, text=True, env=env, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PYTHONPATH shim:" in proc.stdout
    assert "import check: altgrad_triton.kernels from" in proc.stdout
    assert (tmp_path / "out" / "summary.txt").exists()


def _python():
    import sys

    return sys.executable


def _default_path_limits(text: str) -> dict[str, int]:
    """Limits of the steps a plain run takes (not the --tests / --kernels branches)."""
    body = text[text.index("step tune-qrnn") :]
    body = re.sub(r'if \[\[ "\$\{1:-\}" == "--kernels" \]\]; then.*?\n(fi)\n', "", body, flags=re.S)
    limits = {"env": int(re.search(r"^step env (\d+)", text, re.M).group(1))}
    for name, limit in re.findall(r"^\s*(?:step|train|tests_step) (\S+) (\d+)", body, re.M):
        limits[name] = int(limit)
    return limits


@needs_bash
def test_limits_add_up_to_the_header_and_fit_480_s():
    text = SCRIPT.read_text()
    limits = _default_path_limits(text)
    assert {
        "tune-qrnn",
        "tune-lstm",
        "doctor",
        "qrnn-bf16-triton",
        "lstm-bf16-triton",
        "tests",
    } <= set(limits), limits
    said = int(re.search(r"and the limits to\s*#?\s*(\d+) s", text).group(1))
    assert sum(limits.values()) == said <= 480, limits
    # each tune step's limit is at least twice its stated estimate
    for name in ("tune-qrnn", "tune-lstm"):
        estimate = re.search(rf"{name} .*?= (\d+) s -> (\d+)", text, re.S)
        assert estimate and int(estimate.group(2)) == limits[name], name
        assert limits[name] >= 2 * int(estimate.group(1)), name


def _functions(text: str, *names: str) -> str:
    return "\n".join(re.search(rf"^{n}\(\) \{{.*?^\}}", text, re.M | re.S).group(0) for n in names)


def _tests_step(tmp_path, fake_pytest: str, limit: int) -> subprocess.CompletedProcess:
    """Run gpu-check's tests step (its own shell functions) with ``fake_pytest`` as python."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n" + fake_pytest)
    fake.chmod(0o755)
    prog = "\n".join([
        "set -euo pipefail",
        f"WORK={tmp_path}; LOG={tmp_path}/log; PY={fake}; PYTEST_EXTRA=()",
        "names=(); codes=(); secs=()",
        _functions(SCRIPT.read_text(), "record", "step", "tests_step", "pytest_tally"),
        f"tests_step tests {limit}",
    ])  # fmt: skip
    return subprocess.run([BASH, "-c", prog], capture_output=True, text=True, timeout=60)


@needs_bash
def test_killed_pytest_still_gets_a_summary(tmp_path):
    """A stand-in pytest prints progress, then hangs past the step's limit: SIGKILL ends it,
    and the step's output ends with a tally of what had run."""
    proc = _tests_step(tmp_path, "echo '..F.s [ 10%]'\necho '..x'\nsleep 60\n", limit=2)
    out = (tmp_path / "tests.out").read_text()
    assert proc.returncode == 0, proc.stderr
    assert "killed at the limit" in out, out
    assert "5 passed, 1 failed, 0 errors, 1 skipped, 1 xfailed, 0 xpassed" in out, out


@needs_bash
def test_a_pytest_summary_is_left_alone(tmp_path):
    proc = _tests_step(tmp_path, "echo '... [100%]'\necho '3 passed in 0.12s'\n", limit=20)
    assert proc.returncode == 0, proc.stderr
    assert "without its summary" not in (tmp_path / "tests.out").read_text()
