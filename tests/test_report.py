"""altgrad-report on fabricated run directories (no training)."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from altgrad_triton import report
from altgrad_triton.cli import report as report_cli
from altgrad_triton.errors import UserError
from altgrad_triton.report import plots as report_plots

LN2 = math.log(2.0)


def fake_run(
    root,
    name,
    corpus,
    val_losses,
    *,
    modes=None,
    restarts=(),
    test_loss=None,
    sg_cos=None,
    finished=True,
):
    d = root / name
    d.mkdir(parents=True)
    (d / "recipe.toml").write_text(f'[run]\nname = "{name}"\n\n[data]\ncorpus = "{corpus}"\n')
    rows = []
    for i, v in enumerate(val_losses, 1):
        mode = modes[i - 1] if modes else "real"
        rows.append(
            {
                "epoch": i,
                "lr": 1e-3,
                "mode": mode,
                "restart": i in restarts,
                "train_loss": v + 0.1,
                "val_loss": v,
                "val_ppl": math.exp(v),
                "seconds": 10.0,
                "sg_cos": sg_cos[i - 1]
                if isinstance(sg_cos, list)
                else (sg_cos if mode == "synthetic" else None),
            }
        )
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        best = min(val_losses)
        (d / "results.json").write_text(
            json.dumps(
                {
                    "best_val_loss": best,
                    "best_val_ppl": math.exp(best),
                    "test_loss": test_loss if test_loss is not None else best + 0.05,
                    "epochs": len(rows),
                    "seconds": 10.0 * len(rows),
                }
            )
        )
    return d


def test_split_seed_and_back():
    assert report.split_seed("wt2-bptt-t10-s3") == ("wt2-bptt-t10", 3)
    assert report.split_seed("plain") == ("plain", None)
    assert report.split_seed("a-s") == ("a-s", None)
    assert report.split_seed(report.seeded_name("x-sg", 12)) == ("x-sg", 12)


def test_groups_over_seeds_with_mean_and_std(tmp_path):
    fake_run(tmp_path, "wt2-a-s1", "wikitext-2-small", [5.0, 4.5], test_loss=4.6)
    fake_run(tmp_path, "wt2-a-s2", "wikitext-2-small", [5.0, 4.7], test_loss=4.8)
    fake_run(tmp_path, "wt2-b-s1", "wikitext-2-small", [5.2, 4.9], finished=False)
    groups = report.group_runs(report.find_runs([tmp_path]))
    assert [(g.name, len(g.runs)) for g in groups] == [("wt2-a", 2), ("wt2-b", 1)]
    a = groups[0]
    vals = a.values("val")
    assert vals == pytest.approx([math.exp(4.5), math.exp(4.7)])
    mean, std = report.mean_std(vals)
    assert mean == pytest.approx(statistics.fmean(vals))
    assert std == pytest.approx(statistics.stdev(vals))
    # unfinished: best val from metrics.jsonl, no test
    b = groups[1]
    assert b.values("val") == pytest.approx([math.exp(4.9)])
    assert b.values("test") == []


def test_markdown_table_content(tmp_path):
    fake_run(tmp_path, "wt2-a-s1", "wikitext-2-small", [5.0, 4.5], test_loss=4.6)
    fake_run(tmp_path, "wt2-a-s2", "wikitext-2-small", [5.0, 4.7], test_loss=4.8)
    fake_run(tmp_path, "sh-a-s1", "chars", [1.2, 1.1], test_loss=1.15)
    text = report.markdown_table(report.group_runs(report.find_runs([tmp_path])))
    vals = [math.exp(4.5), math.exp(4.7)]
    expected = f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f}"
    row = next(line for line in text.splitlines() if line.startswith("| wt2-a |"))
    assert expected in row
    assert "| 1,2 | 2/2 |" in row
    assert "best val ppl" in text and "best val bpc" in text
    char_row = next(line for line in text.splitlines() if line.startswith("| sh-a |"))
    assert f"{1.1 / math.log(2):.3f}" in char_row  # one seed: the value, no ±
    assert "±" not in char_row.split("|")[4]
    assert row.split("|")[6].strip() == "-"  # no synthesizer, no sg_cos


def test_sg_cos_column_averages_the_fitted_epochs_then_the_seeds(tmp_path):
    modes = ["real", "synthetic", "synthetic"]
    fake_run(tmp_path, "a-s1", "wikitext-2-small", [5.0, 4.9, 4.8], modes=modes, sg_cos=0.2)
    fake_run(tmp_path, "a-s2", "wikitext-2-small", [5.0, 4.9, 4.8], modes=modes, sg_cos=0.4)
    text = report.markdown_table(report.group_runs(report.find_runs([tmp_path])))
    row = next(line for line in text.splitlines() if line.startswith("| a |"))
    assert row.split("|")[6].strip() == f"0.300 ± {statistics.stdev([0.2, 0.4]):.3f}"


def test_synthetic_spans_and_restarts():
    modes = ["real", "synthetic", "synthetic", "real", "synthetic"]
    epochs = [{"epoch": i, "mode": m, "restart": i in (3, 5)} for i, m in enumerate(modes, 1)]
    assert report.synthetic_spans(epochs) == [(1.5, 3.5), (4.5, 5.5)]
    assert report.restart_epochs(epochs) == [3, 5]


def test_write_report_with_plots(tmp_path):
    pytest.importorskip("matplotlib")
    runs = tmp_path / "runs"
    modes = ["real", "synthetic", "synthetic", "real"]
    for seed, losses, cos in ((1, [5.0, 4.8, 4.7, 4.6], 0.2), (2, [5.1, 4.9, 4.7, 4.5], 0.3)):
        fake_run(
            runs,
            f"wt2-alt-s{seed}",
            "wikitext-2-small",
            losses,
            modes=modes,
            restarts=(3,),
            sg_cos=cos,
        )
    md, plots, note = report.write_report([runs], tmp_path / "out")
    assert note is None
    assert {p.name for p in plots} == {
        "wikitext-2-small--wt2-alt.png",
        "wikitext-2-small--overview.png",
    }
    assert all(p.stat().st_size > 1000 for p in plots)
    text = md.read_text()
    assert "| wt2-alt |" in text and "](plots/wikitext-2-small--wt2-alt.png)" in text
    for seed in (1, 2):  # with a seed twin, the difference per epoch gets a plot of its own
        fake_run(runs, f"wt2-bptt-s{seed}", "wikitext-2-small", [5.0, 4.9, 4.8, 4.7])
    md, plots, _ = report.write_report([runs], tmp_path / "out", versus=["alt=bptt"])
    gap = [p for p in plots if p.name == "wikitext-2-small--wt2-alt--vs--wt2-bptt.png"]
    assert len(gap) == 1 and gap[0].stat().st_size > 1000
    assert "](plots/wikitext-2-small--wt2-alt--vs--wt2-bptt.png)" in md.read_text()


def test_missing_matplotlib_still_writes_tables(tmp_path, monkeypatch):
    fake_run(tmp_path / "runs", "a-s1", "wikitext-2-small", [5.0])
    monkeypatch.setattr(report_plots, "import_pyplot", lambda: None)
    md, plots, note = report.write_report([tmp_path / "runs"], tmp_path / "out")
    assert plots == [] and "matplotlib" in note
    assert "| a |" in md.read_text()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert report_cli.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(UserError):
        report.find_runs([tmp_path])  # exists, but holds no runs


def test_cli_writes_markdown(tmp_path, capsys):
    fake_run(tmp_path / "runs", "a-s1", "wikitext-2-small", [5.0, 4.0])
    assert (
        report_cli.main([str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--no-plots"]) == 0
    )
    assert "| a |" in (tmp_path / "o" / "report.md").read_text()
    assert "| a |" in capsys.readouterr().out


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


def test_torn_last_line_is_ignored(tmp_path):
    d = fake_run(tmp_path, "a-s1", "wikitext-2-small", [5.0, 4.0], finished=False)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "val_lo')
    run = report.read_run(d)
    assert len(run.epochs) == 2 and not run.finished


def test_versus_pairs_seeds_and_takes_differences_per_seed(tmp_path, capsys):
    # the baseline's seeds differ by 1 bit each; the run is 0.1 bit better on seeds 1 and 2,
    # and has a seed 3 the baseline lacks (left out of the pairing)
    for seed, (base, run) in enumerate([(2.0, 1.9), (3.0, 2.9), (None, 1.0)], 1):
        if base is not None:
            fake_run(tmp_path, f"c-bptt-t5-s{seed}", "chars", [base * LN2], test_loss=base * LN2)
        fake_run(tmp_path, f"c-sg-t5-s{seed}", "chars", [run * LN2], test_loss=run * LN2)
    groups = report.group_runs(report.find_runs([tmp_path]))
    text = report.paired_table(groups, [report.parse_versus("-sg-=-bptt-")])
    assert "| c-sg-t5 | c-bptt-t5 | 1,2 | -0.100 ± 0.000 | -0.100 ± 0.000 | 2/2 |" in text
    with pytest.raises(UserError, match="--versus: expected PATTERN=REPLACEMENT"):
        report.parse_versus("no-equals-sign")
    args = [str(tmp_path), "--out", str(tmp_path / "o"), "--no-plots", "--versus", "sg=nothing"]
    assert report_cli.main(args) == 0
    assert "no group's name maps to another group's" in capsys.readouterr().out


def test_versus_leaves_out_runs_still_training(tmp_path):
    for seed in (1, 2):
        fake_run(tmp_path, f"w-bptt-s{seed}", "wikitext-2-small", [5.0])
        fake_run(tmp_path, f"w-sg-s{seed}", "wikitext-2-small", [4.0], finished=seed == 1)
    groups = report.group_runs(report.find_runs([tmp_path]))
    text = report.paired_table(groups, [report.parse_versus("sg=bptt")])
    assert "| w-sg | w-bptt | 1 |" in text


def test_mode_phases_cut_where_the_mode_changes():
    epochs = [{"epoch": e, "mode": m} for e, m in enumerate("rssrrrs", 1)]
    epochs = [{**e, "mode": {"r": "real", "s": "synthetic"}[e["mode"]]} for e in epochs]
    assert [(p.mode, p.first, p.last, p.label) for p in report.mode_phases(epochs)] == [
        ("real", 1, 1, "1"),
        ("synthetic", 2, 3, "2-3"),
        ("real", 4, 6, "4-6"),
        ("synthetic", 7, 7, "7"),
    ]


def test_phase_table_sg_cos_and_what_each_phase_did_against_the_twin(tmp_path):
    modes = ["real", "synthetic", "synthetic", "real"]
    base = [5.0, 4.0, 3.0, 2.0]
    for seed, (drop, cos) in enumerate(
        [(0.1, [0.2, 0.3, 0.5, 0.1]), (0.3, [0.4, 0.1, 0.1, 0.0])], 1
    ):
        fake_run(tmp_path, f"bptt-s{seed}", "wikitext-2", base)
        alt = [base[0], base[1] - drop, base[2] - drop, base[3] - drop]  # gains in the SG phase
        fake_run(tmp_path, f"alt-s{seed}", "wikitext-2", alt, modes=modes, sg_cos=cos)
    groups = report.group_runs(report.find_runs([tmp_path]))
    text = report.phase_table(groups, [report.parse_versus("alt=bptt")])
    lines = text.splitlines()
    h1, h2 = math.exp(3.0 - 0.1) - math.exp(3.0), math.exp(3.0 - 0.3) - math.exp(3.0)

    def mean_sd(a, b, digits=2):
        return f"{statistics.fmean([a, b]):.{digits}f} ± {statistics.stdev([a, b]):.{digits}f}"

    # the synthetic phase 2-3: sg_cos over it, the gap at epoch 3 and how it moved since epoch 1
    row = next(x for x in lines if x.startswith("| alt | bptt | 2-3 | synthetic |"))
    assert f"| {mean_sd(0.4, 0.1, 3)} | {mean_sd(0.5, 0.1, 3)} | {mean_sd(h1, h2)} |" in row
    assert row.endswith(f"| {mean_sd(h1, h2)} |")  # the gap was 0 after the real epoch 1
    row = next(x for x in lines if x.startswith("| alt | bptt | 4 | real |"))
    g3, g4 = math.exp(2.0 - 0.1) - math.exp(2.0), math.exp(2.0 - 0.3) - math.exp(2.0)
    assert row.endswith(f"| {mean_sd(g3 - h1, g4 - h2)} |")
    # per seed: sg_cos at the end of the real epoch 1 against what the SG phase then did
    assert f"| alt | 1 | 2-3 | 0.200 | 0.400 | {h1:+.2f} |" in lines
    assert f"| alt | 2 | 2-3 | 0.400 | 0.100 | {h2:+.2f} |" in lines
    assert not any(x.startswith("| bptt") for x in lines)  # no synthetic phase: no rows


def test_report_has_the_phase_table_only_where_a_synthesizer_was_fitted(tmp_path):
    fake_run(tmp_path, "bptt-s1", "wikitext-2", [5.0, 4.0])
    md, _, _ = report.write_report([tmp_path], tmp_path / "out", plots=False)
    assert "Gradient-mode phases" not in md.read_text()
    fake_run(tmp_path, "sg-s1", "wikitext-2", [5.0, 4.0], modes=["real", "synthetic"], sg_cos=0.2)
    md, _, _ = report.write_report([tmp_path], tmp_path / "out", plots=False)
    assert "| sg | - | 2 | synthetic | 0.200 | 0.200 | - | - |" in md.read_text()


def probe_record(epoch: int, ratios: dict[int, float], synth_cos: float | None = None) -> dict:
    """A probe record as probe_run.probe_record writes it, with only what the report reads."""
    synths = {} if synth_cos is None else {"toolkit": {"cos": synth_cos}}
    return {
        "epoch": epoch,
        "horizons": sorted(ratios),
        "mean": {
            str(m): {"layers": {"all": {"ratio": r, "cos": 0.1}}, "synthesizers": synths}
            for m, r in ratios.items()
        },
    }


def test_the_probe_table_and_plots_from_probe_records(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from altgrad_triton.report import probes

    shaded = []
    monkeypatch.setattr(probes, "_mark_phases", lambda axes, epochs: shaded.append(epochs))
    runs = tmp_path / "runs"
    for seed, share in ((1, 0.06), (2, 0.08)):
        d = fake_run(runs, f"wt2-alt-s{seed}", "wikitext-2-small", [5.0, 4.8],
                     modes=["real", "synthetic"])  # fmt: skip
        lines = [probe_record(e, {1: share / e, 2: share / e}, 0.01 * e) for e in (1, 2)]
        (d / "probe.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    # altgrad-probe's file, at longer horizons, is the final probe where there is one
    d = fake_run(runs, "wt2-bptt-s1", "wikitext-2-small", [5.0, 4.9])
    (d / "probe-train.json").write_text(json.dumps(probe_record(2, {1: 0.05, 2: 0.05, 4: 0.07})))
    fake_run(runs, "wt2-plain-s1", "wikitext-2-small", [5.0, 4.9])  # never probed: no row
    # probed only at the end (no per-epoch lines): in the probe table, not in the epochs plot
    d = fake_run(runs, "wt2-a-sg-s1", "wikitext-2-small", [5.0, 4.9], modes=["synthetic"] * 2)
    (d / "probe-train.json").write_text(json.dumps(probe_record(2, {1: 0.05})))
    md, plots, note = report.write_report([runs], tmp_path / "out")
    text = md.read_text()
    # epoch 2's lines: 0.03 and 0.04, mean 0.035, sample std 0.00707; cos 0.02 both seeds
    assert (
        "| wikitext-2-small | wt2-alt | 1,2 | 2 | 2 | 0.035 ± 0.007 | 0.100 ± 0.000 | "
        "toolkit 0.020 ± 0.000 |" in text
    )
    assert "| wikitext-2-small | wt2-bptt | 1 | 2 | 4 | 0.070 | 0.100 | - |" in text
    assert "wt2-plain |" not in text.split("Truncation probe")[1]
    names = {p.name for p in plots}
    assert {"wikitext-2-small--probe-epochs.png", "wikitext-2-small--probe-horizon.png"} <= names
    assert note is None
    # the epochs plot shades the drawn alternating group's synthetic epoch (the BPTT run
    # has none; the synthetic run without per-epoch probes is not drawn there)
    assert [[e["mode"] for e in epochs] for epochs in shaded] == [["real", "synthetic"]]


def test_a_broken_probe_file_leaves_its_run_out_with_a_note(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "a-s1", "wikitext-2-small", [5.0])
    d = fake_run(runs, "b-s1", "wikitext-2-small", [5.0])
    (d / "probe-train.json").write_text(json.dumps({"epoch": 1}))
    notes: list[str] = []
    found = report.find_runs([runs], notes)
    assert [r.name for r in found] == ["a-s1"]
    assert len(notes) == 1 and "probe-train.json" in notes[0] and "horizons" in notes[0]
