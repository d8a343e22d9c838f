"""Reading run folders for the report (``report/runs.py``): damaged or wrongly shaped files
are one line naming the file, a torn last line is ignored, a broken probe file leaves its
run out with a note."""

from __future__ import annotations

import json

import pytest

from altgrad_triton import report
from altgrad_triton.cli import report as report_cli
from altgrad_triton.errors import UserError
from tests.helpers import fake_run


def test_a_damaged_results_file_is_a_one_line_error(tmp_path):
    d = fake_run(tmp_path, "a-s1", "wikitext-2-small", [5.0, 4.0])
    (d / "results.json").write_text('{"best_val')
    with pytest.raises(UserError, match=r"results.json: not valid JSON"):
        report.read_run(d)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("results.json", "[1, 2, 3]",
         "results.json: expected a JSON object with best_val_loss, got list"),
        ("results.json", '{"test_loss": 4.0}', "results.json: lacks 'best_val_loss'"),
        ("metrics.jsonl", "[1, 2]\n{}\n",
         "metrics.jsonl:1: expected a JSON object with epoch, got list"),
        ("metrics.jsonl", '{"val_loss": 4.0}\n{}\n', "metrics.jsonl:1: lacks 'epoch'"),
        ("metrics.jsonl", b'{"epoch": 1, "mode": "\xff"}\n', "metrics.jsonl: not UTF-8 text"),
        ("results.json", b'{"best_val_loss": 4.0, "x": "\xfe"}', "results.json: not UTF-8 text"),
    ],
    ids=["results-list", "results-no-best", "metrics-list", "metrics-no-epoch",
         "metrics-not-utf8", "results-not-utf8"],
)  # fmt: skip
def test_wrongly_shaped_files_are_one_line_errors_naming_the_file(
    tmp_path, capsys, file, content, message
):
    d = fake_run(tmp_path / "runs", "a-s1", "wikitext-2-small", [5.0, 4.0])
    if isinstance(content, bytes):
        (d / file).write_bytes(content)
    else:
        (d / file).write_text(content)
    with pytest.raises(UserError) as e:
        report.read_run(d)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert report_cli.main([str(tmp_path / "runs"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_a_recipe_toml_that_is_not_utf8_leaves_the_folder_name(tmp_path):
    d = fake_run(tmp_path, "a-s1", "wikitext-2-small", [5.0, 4.0])
    (d / "recipe.toml").write_bytes(b'[run]\nname = "\xff"\n')
    assert report.read_run(d).name == "a-s1"


def test_a_run_with_an_unreadable_recipe_is_tabulated_with_a_note(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "a-s1", "wikitext-2-small", [5.0])
    d = fake_run(runs, "b-s1", "wikitext-2-small", [5.0])
    (d / "recipe.toml").write_text("[run\n")
    notes: list[str] = []
    found = report.find_runs([runs], notes)
    assert [(r.name, r.corpus) for r in found] == [("a-s1", "wikitext-2-small"), ("b-s1", "")]
    assert notes == [
        f"{d / 'recipe.toml'}: not a readable recipe; the run is named by its folder, its "
        "corpus unknown"
    ]


def test_torn_last_line_is_ignored(tmp_path):
    d = fake_run(tmp_path, "a-s1", "wikitext-2-small", [5.0, 4.0], finished=False)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "val_lo')
    run = report.read_run(d)
    assert len(run.epochs) == 2 and not run.finished


def test_a_broken_probe_file_leaves_its_run_out_with_a_note(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "a-s1", "wikitext-2-small", [5.0])
    d = fake_run(runs, "b-s1", "wikitext-2-small", [5.0])
    (d / "probe-train.json").write_text(json.dumps({"epoch": 1}))
    notes: list[str] = []
    found = report.find_runs([runs], notes)
    assert [r.name for r in found] == ["a-s1"]
    assert len(notes) == 1 and "probe-train.json" in notes[0] and "horizons" in notes[0]
