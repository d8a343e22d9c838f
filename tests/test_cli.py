"""The command line: a catalogue of user mistakes, each one line on stderr, exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_corpus

ROOT = Path(__file__).resolve().parents[1]


def train(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture
def recipe_file(tmp_path):
    def write(text):
        p = tmp_path / "r.toml"
        p.write_text(text)
        return p

    return write


def test_dump_config_prints_the_papers_configuration():
    proc = train("recipes/wt2.toml", "--dump-config")
    assert proc.returncode == 0, proc.stderr
    for line in (
        'cell = "qrnn"',
        "hidden_size = 1550",
        "emb_size = 400",
        "layers = 4",
        "length = 200",
        "epochs = 320",
        "lr = 0.001",
        "periods = [5, 5, 10, 20, 40, 80, 160]",
    ):
        assert line in proc.stdout, line


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[optim]\nlearning_rate = 1\n", ["optim.learning_rate: unknown key"]),
        ("[run]\nepochs = 'ten'\n", ["run.epochs: must be an integer, got 'ten'"]),
        ("[model.dropout]\ninput = 2.0\n", ["model.dropout.input: must be < 1, got 2.0"]),
        ("[run]\nepochs = \n", ["TOML syntax error", "line 2"]),
    ],
)
def test_bad_recipes(recipe_file, text, fragments):
    assert_user_error(train(recipe_file(text)), *fragments)


def test_unreadable_recipe(tmp_path):
    assert_user_error(train(tmp_path / "missing.toml"), "recipe file not found")


def test_bad_override_value():
    assert_user_error(train("recipes/wt2-small.toml", "optim.lr=-3"), "optim.lr: must be > 0")


def test_missing_data_directory(tmp_path):
    assert_user_error(
        train("recipes/wt2-small.toml", "data.corpus=text", f"data.path={tmp_path / 'nope'}"),
        str(tmp_path / "nope"),
    )


def test_no_data_and_no_download_says_where_to_put_files(tmp_path):
    proc = train(
        "recipes/wt2-small.toml",
        "data.corpus=wikitext-2",  # wikitext-2-small itself ships with the package
        f"data.cache_dir={tmp_path}",
        "data.download=false",
        f"run.out_dir={tmp_path / 'runs'}",
    )
    assert_user_error(proc, str(tmp_path))


def test_resume_of_missing_or_corrupt_checkpoint(tmp_path):
    assert_user_error(train("--resume", tmp_path / "nothing"), "not a run directory")
    run = tmp_path / "run"
    (run / "checkpoints" / "last").mkdir(parents=True)
    (run / "recipe.toml").write_text((ROOT / "recipes" / "wt2-small.toml").read_text())
    (run / "checkpoints" / "last" / "meta.json").write_text("{not json")
    proc = train("--resume", run, f"data.path={tiny_corpus(tmp_path / 'data')}", "data.corpus=text")
    assert_user_error(proc, "checkpoint is corrupt")


def test_train_then_refuse_existing_run_then_resume(tmp_path):
    data = tiny_corpus(tmp_path / "data")
    common = [
        "data.corpus=text",
        f"data.path={data}",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.name=cli",
        "model.hidden_size=16",
        "model.emb_size=16",
        "bptt.length=8",
        "data.batch_size=4",
        "data.eval_batch_size=2",
        "data.test_batch_size=2",
        "run.device=cpu",
    ]
    proc = train("recipes/wt2-small.toml", "run.epochs=1", *common)
    assert proc.returncode == 0, proc.stderr
    assert "test ppl" in proc.stdout
    run = tmp_path / "runs" / "cli"
    assert_user_error(
        train("recipes/wt2-small.toml", *common), "already holds a run", f"--resume {run}"
    )
    proc = train("--resume", run, "run.epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_recipe_with_resume_says_they_do_not_go_together(tmp_path):
    """Issue 32: `altgrad-train wt2-small --resume RUN` blamed run.name=wt2-small, a key the
    user never typed."""
    run = tmp_path / "A"
    run.mkdir()
    (run / "recipe.toml").write_text('[run]\nname = "A"\n')
    proc = train("wt2-small", "--resume", run)
    assert_user_error(proc, f"--resume {run} continues with the run's own recipe.toml",
                      "give no recipe (wt2-small)", "run.epochs=8")  # fmt: skip


def test_an_absurd_epoch_count_is_refused(tmp_path):
    proc = train("wt2-small", "run.epochs=99999999999999999999999", "--dump-config")
    assert_user_error(proc, "run.epochs: must be <= 1000000")
