"""altgrad-probe on tiny trained runs: its table and JSON (with and without ``--fit``), and
one line for each bad option."""

import json

import pytest

from altgrad_triton.cli import probe as probe_cli
from tests.helpers import run_command, trained_tiny_run

ALL_KINDS = "linear,mlp,toolkit,authors,linear+2"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    synthetic = {"enabled": True, "alternation": {"start": "synthetic"}}
    return trained_tiny_run(tmp_path_factory.mktemp("probe"), synthetic=synthetic)


@pytest.fixture(scope="module")
def bptt_run(tmp_path_factory):
    """A tiny BPTT run (no synthesizer) of window-2 QRNN layers: the authors' kind joins
    fewer state tensors than the others there."""
    qrnn = {"cell": "qrnn", "emb_size": 16, "hidden_size": 16, "layers": 2, "window": 2}
    return trained_tiny_run(tmp_path_factory.mktemp("probe-fit"), model=qrnn)


def call(capsys, *args):
    return run_command(probe_cli.main, capsys, *args)


def test_probe_prints_its_table_and_writes_json(run_dir, tmp_path, capsys):
    out_file = tmp_path / "probe.json"
    code, out, err = call(
        capsys, run_dir, "--boundaries", "1,3", "--max-horizon", "2", "--float64",
        "--out", out_file,
    )  # fmt: skip
    assert code == 0, err
    assert "discarded/within" in out and "toolkit: cos" in out and "layers.1" in out
    report = json.loads(out_file.read_text())
    assert report["horizons"] == [1, 2] and report["boundaries"] == [1, 3]
    assert report["synthesizers"] == ["toolkit"] and report["dtype"] == "float64"
    assert len(report["per_boundary"]) == 2
    mean = report["mean"]["2"]
    assert mean["grad_norm"] > 0 and mean["layers"]["all"]["discarded_norm"] > 0
    assert -1 <= mean["synthesizers"]["toolkit"]["cos"] <= 1


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--max-horizon", "0"], "--max-horizon: must be an integer >= 1"),
        (["--boundaries", "a,b"], "--boundaries: must be comma-separated integers"),
        (["--boundaries", "100000"], "boundaries: [100000] out of range"),
        (["--split", "dev"], "--split: invalid choice"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_option_is_a_one_line_error(run_dir, capsys, args, fragment):
    code, _, err = call(capsys, run_dir, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]


def test_version_and_a_folder_that_is_no_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        probe_cli.main(["--version"])
    assert "altgrad-probe" in capsys.readouterr().out
    code, _, err = call(capsys, tmp_path / "nowhere")
    assert code == 2 and "not a run directory" in err and len(err.strip().splitlines()) == 1


def test_fit_on_a_bptt_run_scores_every_kind_in_the_table_and_json(bptt_run, tmp_path, capsys):
    out_file = tmp_path / "probe.json"
    code, out, err = call(
        capsys, bptt_run, "--boundaries", "2,4", "--max-horizon", "2", "--float64",
        "--fit", ALL_KINDS, "--fit-segments", "8", "--out", out_file,
    )  # fmt: skip
    assert code == 0, err
    names = [f"fit:{k}" for k in ALL_KINDS.split(",")]
    report = json.loads(out_file.read_text())
    assert report["synthesizers"] == names
    assert report["fit"]["kinds"] == ALL_KINDS.split(",") and report["fit"]["segments"] == 8
    for name in names:
        assert name in out
        fitted = report["fit"]["synthesizers"][name]
        assert fitted["sg_loss_final"] >= 0 and fitted["synthetic"]["enabled"]
        for m in ("1", "2"):
            assert -1 <= report["mean"][m]["synthesizers"][name]["cos"] <= 1
    assert "what each synthesizer recovers" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--fit", "lstm"], "--fit: 'lstm' is not a synthesizer kind; allowed: toolkit, authors"),
        (["--fit", "linear+0"], "--fit: 'linear+0' is not a synthesizer kind"),
        (["--fit-segments", "3"], "--fit-segments: only with --fit KINDS"),
        (["--fit", "linear", "--fit-segments", "100000"], "--fit-segments: 100000 is more"),
        (["--fit", "linear", "--fit-set", "bogus=1"], "synthetic.bogus: unknown key"),
        (["--fit", "linear", "--fit-set", "init=uniform"], "--fit linear with --fit-set"),
        (["--fit", "linear", "--fit-set", "lr"], "--fit-set: override 'synthetic.lr'"),
    ],
)
def test_a_bad_fit_option_is_a_one_line_error(bptt_run, capsys, args, fragment):
    code, _, err = call(capsys, bptt_run, "--boundaries", "1", "--max-horizon", "1", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
