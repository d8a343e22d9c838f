"""altgrad-bench on a CPU (reference paths, tiny shapes), its CSV, and scripts/gpu-check.sh."""

import csv
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from altgrad_triton import bench, kernels
from altgrad_triton.cli import bench as bench_cli
from altgrad_triton.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check.sh"


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_cpu_bench_runs_fast_prints_tables_and_writes_the_given_csv(tmp_path, capsys, no_gpu):
    out_csv = tmp_path / "bench.csv"
    t0 = time.perf_counter()
    assert bench_cli.main(["--quick", "--csv", str(out_csv)]) == 0
    assert time.perf_counter() - t0 < 30
    out = capsys.readouterr().out
    assert "CPU REFERENCE TIMINGS, NOT GPU FIGURES" in out
    for title in (
        "QRNN fo-pooling",
        "synthetic-gradient loss",
        "element-wise QRNN synthesizer",
        "LSTM",
        "LM head: linear + cross-entropy",
        "authors' synthesizer",
        "end to end",
    ):
        assert title in out
    assert "p20-p80" in out and "provider" in out  # a rich table
    rows = _rows(out_csv)
    assert tuple(rows[0]) == bench.CSV_COLUMNS
    body = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    families = {"fo_pool", "sg_loss", "elementwise", "lstm", "linear_ce", "authors_scan", "e2e"}
    assert {r["family"] for r in body} == families
    head = {r["provider"] for r in body if r["family"] == "linear_ce"}
    assert head == {"torch", "chunked"}  # unfused eager and the chunked reference
    authors = {r["shape"].rsplit(" ", 1)[-1] for r in body if r["family"] == "authors_scan"}
    assert authors == {"scan", "synthesizer"}  # the scan alone, then the whole synthesizer
    assert all(r["device"] == "cpu" and r["note"].startswith("cpu-reference") for r in body)
    assert all(r["torch"] == torch.__version__ and r["triton"] and r["date"] for r in body)
    assert {r["direction"] for r in body} == {"fwd", "bwd", "fwd+bwd", "train"}
    assert "triton" not in {r["provider"] for r in body}  # reference paths only
    timed = [r for r in body if r["ms"]]
    assert len(timed) == len(body) and all(float(r["ms"]) > 0 for r in timed)
    e2e = [r for r in body if r["family"] == "e2e"]
    assert e2e and all(r["unit"] == "tokens/s" and float(r["metric"]) > 0 for r in e2e)
    # appending again keeps one header
    assert bench_cli.main(["--families", "sg_loss", "--csv", str(out_csv)]) == 0
    rows2 = _rows(out_csv)
    assert len(rows2) == len(rows) + 3 and rows2[0] == rows[0]


def test_cpu_bench_leaves_docs_csv_alone_without_explicit_csv(
    tmp_path, monkeypatch, capsys, no_gpu
):
    docs = tmp_path / "docs"
    docs.mkdir()
    header = ",".join(bench.CSV_COLUMNS) + "\n"
    (docs / "benchmarks.csv").write_text(header)
    monkeypatch.chdir(tmp_path)
    assert bench_cli.main(["--families", "sg_loss"]) == 0
    assert (docs / "benchmarks.csv").read_text() == header
    assert "CPU rows not written" in capsys.readouterr().out


def test_train_slice_on_cpu(tmp_path, capsys, no_gpu):
    out_csv = tmp_path / "slice.csv"
    assert bench_cli.main(["--train-slice", "0.3", "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "tok/s" in out and "CPU REFERENCE TIMINGS" in out
    (row,) = [dict(zip(bench.CSV_COLUMNS, r, strict=True)) for r in _rows(out_csv)[1:]]
    assert row["family"] == "e2e-slice" and row["provider"] == "torch"
    assert float(row["metric"]) > 0 and row["unit"] == "tokens/s"


def test_profile_on_cpu_tables_one_segment_of_each_recipe(capsys, no_gpu):
    assert bench_cli.main(["--profile"]) == 0
    out = capsys.readouterr().out
    assert (
        "one training segment of wt2.toml" in out and "one training segment of wt2-lstm.toml" in out
    )
    assert out.count("Self CPU time total") == 2 and "aten::" in out
    # the marked parts' shares: the LM head and, in synthetic mode, the synthesizer
    assert out.count("share of the segment") == 2
    for part in ("lm_head: linear_cross_entropy", "synthesizer: predict", "synthesizer: fit"):
        assert part in out.split("share of the segment")[1], part
    assert bench_cli.main(["--profile", "--train-slice", "1"]) == 2


def test_zero_budget_skips_and_says_so(tmp_path, capsys, no_gpu):
    assert bench_cli.main(["--families", "fo_pool", "lstm", "--budget", "0", "--no-csv"]) == 0
    out = capsys.readouterr().out
    assert "skipped (time budget 0 s spent)" in out and "fo_pool B=2 T=8 H=16" in out


def test_bad_options_are_one_line_errors(capsys):
    assert bench_cli.main(["--families", "nope"]) == 2
    assert bench_cli.main(["--csv", "x.csv", "--no-csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_csv_with_another_header_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    env = bench.Env(torch.device("cpu"), False, "cpu", "", "t", "tr", "d")
    with pytest.raises(UserError, match="header"):
        bench.append_csv(
            path, [bench.Row("f", "s", "float32", "fwd", "torch", ms=1.0)], env, create_parent=True
        )
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_docs_csv_is_the_header_only():
    rows = _rows(REPO / "docs" / "benchmarks.csv")
    assert rows == [list(bench.CSV_COLUMNS)]


def test_traffic_and_flop_counts():
    # kernels/fo_pooling.py: the bf16 forward at T=200, B=20, H=1550 moves about 50 MB
    fo = bench.fo_pool_bytes(200, 20, 1550, 2)
    assert fo["fwd"] == 6_200_000 * 8 + 31_000 * 8
    assert fo["bwd"] == 6_200_000 * 14 + 31_000 * 8
    assert fo["fwd+bwd"] == fo["fwd"] + fo["bwd"]
    assert bench.fo_pool_bytes(1, 1, 1, 4)["fwd"] == 16 + 8
    assert bench.sg_loss_bytes(10) == {"fwd": 120, "bwd": 80, "fwd+bwd": 200}
    assert bench.elementwise_bytes(2, 3)["fwd"] == 2 * 3 * 12 + 2 * 8
    fl = bench.lstm_flops(70, 80, 1150)
    assert fl["fwd"] == 2 * 70 * 80 * 4 * 1150 * 2300
    assert bench.lstm_flops(1, 1, 1, layers=3)["fwd+bwd"] == 3 * 3 * 16


def test_authors_scan_cases_run_forward_and_backward_as_the_gpu_bench_does():
    """Under a GPU-mode Env on the CPU (the kernels through the interpreter): the scan's
    and the whole synthesizer's cases on both backends, each through the one forward +
    backward the peak-memory note runs (outputs that are not scalars take ones upstream;
    a bare autograd.grad refused them)."""
    from types import SimpleNamespace

    env = bench.Env(torch.device("cpu"), True, "x", "9.0", "t", "tr", "d", copy_gbps=1.0)
    shapes = SimpleNamespace(state=[("tiny", 2, 20)], units=4, compile_all=False)
    groups = bench.authors_scan_groups(env, shapes)
    assert [g.shape for g in groups] == ["tiny N=40 U=4 scan", "tiny B=2 D=20 U=4 synthesizer"]
    for g in groups:
        assert [c.provider for c in g.cases] == ["triton", "torch"]
        grads = []
        for c in g.cases:
            torch.manual_seed(1)  # the same inputs and weights for both backends
            fwd, leaves = c.make()
            bench.forward_backward(fwd, leaves)
            torch.manual_seed(0)  # the same zoneout mask and noise on both backends
            outs = list(fwd())
            ups = [torch.ones_like(o) for o in outs]
            grads.append(torch.autograd.grad(outs, leaves, ups, allow_unused=True)[0])
        torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)
    traffic = bench.authors_scan_bytes(10, 3)
    assert traffic == {"fwd": 600, "bwd": 960, "fwd+bwd": 1560}


def test_ratio_and_metrics_against_ours():
    env = bench.Env(torch.device("cpu"), True, "x", "9.0", "t", "tr", "d", copy_gbps=1000.0)
    group = bench.Group(
        "sg_loss", "s", "float32", [], bytes={"fwd": 1e9, "bwd": 1e9, "fwd+bwd": 2e9}
    )
    rows = [
        bench.Row("sg_loss", "s", "float32", "fwd", "triton", ms=2.0),
        bench.Row("sg_loss", "s", "float32", "fwd", "torch", ms=6.0),
        bench.Row("sg_loss", "s", "float32", "fwd", "compile", note="n/a: boom"),
    ]
    bench.add_metrics(rows, group, env)
    assert rows[0].ratio == 1.0 and rows[1].ratio == 3.0 and rows[2].ratio is None
    assert rows[0].metric == pytest.approx(500.0) and rows[0].pct == pytest.approx(50.0)


def test_copy_baseline_rows_time_a_copy_of_the_same_bytes():
    """On a GPU a group can be set against a device copy moving its bytes per direction;
    here the copy runs on the CPU under a GPU-mode Env, only to check the rows."""
    env = bench.Env(torch.device("cpu"), True, "x", "9.0", "t", "tr", "d", copy_gbps=1.0)
    group = bench.Group("fo_pool", "s", "float32", [], bytes={"fwd": 8e5, "bwd": 16e5})
    group.directions, group.copy_baseline = ("fwd", "bwd"), True
    timer = bench.Timer(env, 1.0, 5.0)
    rows = bench.measure_group(group, timer, env, bench.Budget(None, ["fo_pool"]))
    copies = [r for r in rows if r.provider == "copy"]
    assert [r.direction for r in copies] == ["fwd", "bwd"]
    assert all(r.ms > 0 and r.unit == "GB/s" and r.metric > 0 for r in copies)
    group.copy_baseline = False
    assert not [
        r
        for r in bench.measure_group(group, timer, env, bench.Budget(None, []))
        if r.provider == "copy"
    ]


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


def test_cli_help_and_argument_errors_import_no_torch():
    """The CLI reads the family names from a module that imports nothing, so that --help
    and argument errors stay fast: torch is imported only once the benchmark runs."""
    code = (
        "import sys\n"
        "from altgrad_triton.cli import bench\n"
        "bench.parser().format_help()\n"
        "assert bench.main(['--families', 'nope']) == 2\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([_python(), "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "error: --families: unknown 'nope'" in proc.stderr


@pytest.mark.skipif(not kernels.interpreting(), reason="Triton on the CPU: the interpreter")
def test_the_kernel_checks_cost_is_measured_on_a_checked_segment_against_an_unchecked_one():
    """The e2e family's 'kernel check' row (on a GPU): a segment with every family's first
    check against the same segment without, after a warm-up; here through the interpreter
    at the tiny CPU shapes."""
    from altgrad_triton.bench import e2e

    env = bench.Env(torch.device("cpu"), False, "cpu", "", "t", "tr", "d")
    checked, plain, segments = e2e.check_cost(
        env, e2e.QRNN_RECIPE, ["synthetic.enabled=true"], "triton", "float32", 1, "synthetic"
    )
    assert checked > plain > 0  # the check runs two more forwards and backwards per family
    assert segments == e2e.WT2_TRAIN_TOKENS // (4 * 8)  # the tiny shapes' batch and length
