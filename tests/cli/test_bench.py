"""altgrad-bench on a CPU (reference paths, tiny shapes): its tables, its CSV, the training
slice, the profile, the time budget, ``--slices``, and one-line errors."""

import csv
import subprocess
import time
from pathlib import Path

import pytest
import torch

from altgrad_triton import bench
from altgrad_triton.bench.slices import slice_row
from altgrad_triton.cli import bench as bench_cli
from altgrad_triton.config.recipe import to_toml
from altgrad_triton.errors import UserError
from altgrad_triton.run.train import Trainer
from tests.helpers import one_error_line, run_command, tiny_corpus, tiny_recipe

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    "option, value, allowed",
    [("--budget", "-1", ">= 0"), ("--warmup", "nan", ">= 0"), ("--rep", "0", "> 0"),
     ("--rep", "inf", "> 0")],
)  # fmt: skip
def test_timer_options_must_be_finite_and_in_range(option, value, allowed, capsys):
    line = one_error_line(*run_command(bench_cli.main, capsys, option, value)[::2])
    assert f"{option}: must be a finite number {allowed}, got '{value}'" in line


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


@pytest.fixture
def trained_run(tmp_path):
    r = tiny_recipe(tiny_corpus(tmp_path / "data"), tmp_path / "runs", run={"epochs": 2})
    Trainer(r, tmp_path / "runs" / "tiny").fit()
    return tmp_path / "runs" / "tiny"


def test_cli_prints_the_table_and_refuses_what_is_not_a_run(trained_run, tmp_path, capsys,
                                                            monkeypatch):  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out_csv = tmp_path / "rows.csv"
    assert bench_cli.main(["--slices", str(trained_run), "--csv", str(out_csv)]) == 0
    assert "altgrad-train runs" in capsys.readouterr().out
    assert len(out_csv.read_text().splitlines()) == 2  # header + one row
    assert bench_cli.main(["--slices", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(UserError, match="no finished epoch"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "recipe.toml").write_text(to_toml(tiny_recipe(tmp_path, tmp_path)))
        (tmp_path / "empty" / "metrics.jsonl").write_text("")
        slice_row(tmp_path / "empty")
