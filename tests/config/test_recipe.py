"""Recipes (``config/recipe.py``): validation that reports every problem, overrides, extends,
dump, the shipped recipes, and the keys that name folders and threads."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from altgrad_triton.config import recipe as recipes
from altgrad_triton.errors import UserError
from tests.helpers import assert_user_error, command

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "recipes" / "wt2-small.toml"


def write(tmp_path, text, name="r.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_shipped_recipe_is_valid():
    files = list((ROOT / "recipes").rglob("*.toml"))  # the _*.toml bases load on their own too
    assert len(files) >= 23
    for p in files:
        # tinyshakespeare is not packaged: its recipes ask for data.path (checked below)
        given = ["data.path=input.txt"] if "shakespeare" in p.parts else []
        r = recipes.load(p, given)
        assert r.run.name


def test_no_shipped_recipe_names_a_path_outside_the_repository():
    for p in (ROOT / "recipes").rglob("*.toml"):
        path = tomllib.loads(p.read_text()).get("data", {}).get("path", "")
        assert path == "", (p, path)  # the packaged corpus, the cache, or the user's


def test_a_recipe_whose_corpus_is_not_packaged_asks_for_data_path():
    with pytest.raises(UserError) as e:
        recipes.load(ROOT / "recipes" / "evidence" / "shakespeare" / "bptt-t25.toml")
    assert "data.path: corpus 'chars' needs your data: pass data.path=" in str(e.value)
    assert "input.txt" in str(e.value)


def test_paper_recipe_holds_the_paper_configuration():
    r = recipes.load(ROOT / "recipes" / "wt2.toml")
    m = r.model
    assert (m.cell, m.layers, m.hidden_size, m.emb_size, m.window) == ("qrnn", 4, 1550, 400, 2)
    assert (r.optim.name, r.optim.lr, r.optim.weight_decay, r.optim.clip) == (
        "adam",
        1e-3,
        1.2e-6,
        0.25,
    )
    assert (r.bptt.length, r.run.epochs, r.data.batch_size, r.run.seed) == (200, 320, 20, 42)
    d = m.dropout
    assert (d.input, d.hidden, d.output, d.embedding, d.weight) == (0.4, 0.2, 0.4, 0.1, 0.1)
    assert (r.optim.ar_alpha, r.optim.tar_beta) == (2.0, 1.0)
    s = r.synthetic
    assert (s.enabled, s.synthesizer, s.cell, s.hidden, s.scale, s.lr) == (
        True,
        "toolkit",
        "qrnn",
        50,
        0.1,
        1e-3,
    )
    assert r.schedule.periods == [5, 5, 10, 20, 40, 80, 160]
    assert s.alternation.switch_at_restarts and s.alternation.switch_epochs == [2]
    ptb = recipes.load(ROOT / "recipes" / "ptb.toml")
    assert (ptb.optim.clip, ptb.model.dropout.hidden, ptb.data.corpus) == (0.2, 0.3, "ptb")


def test_all_problems_reported_at_once_with_dotted_keys(tmp_path):
    p = write(
        tmp_path,
        """
[optim]
lr = -1
lerning_rate = 3
[model]
cell = "gru"
layers = "four"
[model.dropout]
input = 1.5
""",
    )
    with pytest.raises(UserError) as e:
        recipes.load(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert "optim.lr: must be > 0, got -1" in msg
    assert "optim.lerning_rate: unknown key" in msg
    assert "model.cell: must be one of 'qrnn', 'lstm', got 'gru'" in msg
    assert "model.layers: must be an integer, got 'four'" in msg
    assert "model.dropout.input: must be < 1, got 1.5" in msg


@pytest.mark.parametrize("seed", [2**64, -1, 10**24])
def test_seed_outside_32_bits_is_one_line(seed):
    """A seed torch cannot take (beyond 64 bits, or after the per-epoch offsets) used to be a
    traceback from deep inside training."""
    with pytest.raises(UserError) as e:
        recipes.load(ROOT / "recipes" / "wt2-small.toml", [f"run.seed={seed}"])
    bound = "<= 4294967295" if seed > 0 else ">= 0"
    assert str(e.value).endswith(
        f"wt2-small.toml: invalid recipe: run.seed: must be {bound}, got {seed}"
    )


def test_unknown_key_suggests_closest(tmp_path):
    p = write(tmp_path, "[bptt]\nlenght = 35\n")
    with pytest.raises(UserError, match=r"did you mean 'bptt.length'"):
        recipes.load(p)
    p = write(tmp_path, "[optimizer]\nlr = 1\n")
    with pytest.raises(UserError, match=r"did you mean 'optim'"):
        recipes.load(p)


def test_overrides_parse_toml_and_bare_words(tmp_path):
    p = write(tmp_path, "[run]\nepochs = 2\n")
    r = recipes.load(
        p,
        [
            "optim.lr=3e-4",
            "data.path=/tmp/wt2",
            "run.epochs=5",
            "schedule.periods=[2, 4]",
            "model.tie_weights=false",
            "data.corpus=text",
        ],
    )
    assert r.optim.lr == 3e-4 and r.data.path == "/tmp/wt2" and r.run.epochs == 5
    assert r.schedule.periods == [2, 4] and r.model.tie_weights is False
    with pytest.raises(UserError, match="expected key.sub=value"):
        recipes.load(p, ["optim.lr"])
    with pytest.raises(UserError, match="run.epochs: must be an integer"):
        recipes.load(p, ["run.epochs=2.5"])


def test_int_accepted_for_float_and_bool_not_for_int(tmp_path):
    r = recipes.load(write(tmp_path, "[optim]\nlr = 1\n"))
    assert isinstance(r.optim.lr, float)
    with pytest.raises(UserError, match="run.epochs: must be an integer, got True"):
        recipes.load(write(tmp_path, "[run]\nepochs = true\n"))


def test_extends_merges_deeply_and_detects_loops(tmp_path):
    write(tmp_path, "[model]\ncell = 'lstm'\nlayers = 3\n", "base.toml")
    p = write(tmp_path, "extends = 'base.toml'\nmodel.layers = 2\n")
    r = recipes.load(p)
    assert (r.model.cell, r.model.layers) == ("lstm", 2)
    write(tmp_path, "extends = 'b.toml'\n", "a.toml")
    write(tmp_path, "extends = 'a.toml'\n", "b.toml")
    with pytest.raises(UserError, match="loops"):
        recipes.load(tmp_path / "a.toml")


def test_syntax_error_names_the_line(tmp_path):
    p = write(tmp_path, "[run]\nepochs = 2\nname = \n")
    with pytest.raises(UserError, match=r"TOML syntax error: .*line 3"):
        recipes.load(p)


def test_missing_and_unreadable_recipe(tmp_path):
    with pytest.raises(UserError, match="recipe file not found"):
        recipes.load(tmp_path / "nope.toml")
    extender = write(tmp_path, "extends = 'gone.toml'\n", "child.toml")
    with pytest.raises(UserError) as e:
        recipes.load(extender)
    assert str(e.value) == (
        f"{tmp_path / 'gone.toml'}: recipe file not found (named by 'extends' in {extender})"
    )
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="cannot read recipe"):
        recipes.load(tmp_path / "bin.toml")


def test_cross_checks(tmp_path):
    p = write(
        tmp_path,
        "[data]\ncorpus = 'text'\n[synthetic.alternation]\nswitch_epochs = [1]\n"
        "[schedule]\nkind = 'cosine_restarts'\nperiods = [0]\n",
    )
    with pytest.raises(UserError) as e:
        recipes.load(p)
    msg = str(e.value)
    assert "data.path" in msg and "switch_epochs[0]" in msg and "schedule.periods[0]" in msg


def test_dump_round_trips():
    r = recipes.load(ROOT / "recipes" / "wt2.toml")
    text = recipes.to_toml(r)
    assert "hidden_size = 1550" in text
    assert recipes.from_dict(tomllib.loads(text)) == r


def test_model_shape_keys():
    r = recipes.Recipe()
    shape = recipes.model_shape(r)
    assert shape["model.hidden_size"] == 1550 and "optim.lr" not in shape


def synthetic_epochs(path, epochs=None):
    from altgrad_triton.run.build import training_plan

    r = recipes.load(path)
    plan = training_plan(r)
    return [e for e in range(1, (epochs or r.run.epochs) + 1) if plan(e).mode == "synthetic"]


def spans(*ranges):
    return [e for lo, hi in ranges for e in range(lo, hi + 1)]


def test_alternating_phases_follow_the_authors_commands():
    """PTB: --mixture without --whenswitch; WikiText-2: --mixture --whenswitch=2."""
    rec = ROOT / "recipes"
    assert synthetic_epochs(rec / "ptb" / "alt-rb5.toml") == spans((6, 10), (21, 40), (81, 160))
    assert synthetic_epochs(rec / "ptb" / "alt-rb160.toml") == spans((161, 320))
    assert synthetic_epochs(rec / "wt2" / "alt-rb5.toml") == spans(
        (2, 5), (11, 20), (41, 80), (161, 320)
    )
    assert synthetic_epochs(rec / "wt2" / "alt-rb160.toml") == spans((2, 160))
    for corpus in ("ptb", "wt2"):  # DNI: --whenswitch=2, no --mixture
        for name in ("dni", "dni-rb5", "dni-rb160"):
            assert synthetic_epochs(rec / corpus / f"{name}.toml") == spans((2, 320))


EVIDENCE_V2 = ROOT / "recipes" / "evidence-v2"


def test_every_evidence_v2_recipe_loads_validates_and_holds_its_plan():
    files = sorted(p for p in EVIDENCE_V2.rglob("*.toml") if not p.name.startswith("_"))
    names = {recipes.load(p).run.name for p in files}
    assert names == {
        "ev2-bptt",
        "ev2-bptt-rb5",
        "ev2-dni",
        "ev2-dni-rb5",
        "ev2-alt-rb5-authors",
        "ev2-alt-rb5-toolkit",
        "ev2-alt-rb5-cdni",
        "ev2-bptt-rb5-t10",
        "ev2-alt-rb5-authors-t10",
        "ev2-alt-rb5-toolkit-t10",
        "ev2-alt-rb5-cdni-t10",
    }
    for p in files:
        r = recipes.load(p)
        assert (r.model.cell, r.model.layers, r.model.window, r.run.epochs) == ("qrnn", 2, 2, 40)
        restarts = r.schedule.kind == "cosine_restarts"
        assert restarts == ("rb5" in r.run.name)
        if restarts:
            assert r.schedule.periods == [5, 5, 10, 20]
        synthetic = synthetic_epochs(p)
        if "alt" in r.run.name:  # the authors' WikiText-2 phases
            assert synthetic == spans((2, 5), (11, 20))
        elif r.run.name.startswith("ev2-dni"):
            assert synthetic == spans((2, 40))
        else:
            assert synthetic == [] and not r.synthetic.enabled
        if "authors" in r.run.name or r.run.name.startswith("ev2-dni"):
            assert r.synthetic.synthesizer == "authors"
        # the truncation ablation: same tokens per step and steps per epoch, same eval rows
        tokens = r.data.batch_size * r.bptt.length
        assert (tokens, r.run.max_batches) == (700, 25)
        assert r.run.max_eval_batches * r.bptt.length == 350


def test_the_authors_synthesizer_fills_the_keys_a_recipe_leaves_unset(tmp_path):
    p = write(tmp_path, '[synthetic]\nenabled = true\nsynthesizer = "authors"\n')
    s = recipes.load(p).synthetic
    assert (s.synthesizer, s.authors.sequence, s.authors.window, s.authors.zoneout) == (
        "authors",
        "scan",
        2,
        0.1,
    )
    assert (s.init, s.reduction, s.advance, s.join, s.split_target) == (
        "uniform",
        "sum",
        "every_call",
        "recurrent",
        True,
    )
    # the raw gradient of the per-token mean loss, injected at 0.1, Adam 1e-3 with decay
    assert (s.target_scale, s.scale, s.lr, s.weight_decay, s.dropout) == (
        1.0,
        0.1,
        1e-3,
        1.2e-6,
        0.0,
    )
    # a key the recipe or an override sets wins: one difference at a time can be undone
    s = recipes.load(p, ["synthetic.reduction=mean", "synthetic.authors.window=1"]).synthetic
    assert (s.reduction, s.advance, s.authors.window) == ("mean", "every_call", 1)
    # the authors' synthesizer with the toolkit's values for the rest
    s = recipes.load(p, ["synthetic.authors.defaults=false", "synthetic.dropout=0"]).synthetic
    assert (s.reduction, s.advance, s.init, s.authors.window) == ("mean", "once", "zero", 2)
    # the resolved recipe reads back as itself
    r = recipes.load(p)
    assert recipes.from_dict(tomllib.loads(recipes.to_toml(r))) == r
    for paper in ("wt2.toml", "ptb.toml"):  # the paper-sized recipes take it from the command line
        s = recipes.load(ROOT / "recipes" / paper, ["synthetic.synthesizer=authors"]).synthetic
        assert (s.authors.sequence, s.reduction, s.enabled) == ("scan", "sum", True)


def test_keys_of_the_authors_synthesizer_are_refused_for_another(tmp_path):
    p = write(tmp_path, "[synthetic.authors]\nwindow = 1\nzoneout = 0.2\n")
    with pytest.raises(UserError) as e:
        recipes.load(p)
    msg = str(e.value)
    assert "synthetic.authors.window" in msg and "synthetic.authors.zoneout" in msg
    assert "synthetic.synthesizer = 'authors'" in msg
    for override, key in (
        ("synthetic.dropout=0.1", "synthetic.dropout"),
        ("synthetic.cell=gru", "synthetic.cell"),
    ):
        q = write(tmp_path, '[synthetic]\nsynthesizer = "authors"\n', "q.toml")
        with pytest.raises(UserError, match=key):
            recipes.load(q, [override])
    with pytest.raises(UserError, match="synthetic.init"):
        recipes.load(write(tmp_path, '[synthetic]\nsynthesizer = "linear"\ninit = "uniform"\n'))


@pytest.mark.parametrize(
    "override",
    [
        "run.name=",
        'run.name=""',
        'run.name="abc',
        "run.name=a/b",
        "run.name=..",
        "run.name=.",
        'run.name="a b"',
        'run.name="it\'s"',
        'run.name="a\\b"',
    ],
)
def test_a_run_name_that_is_not_one_folder_name_is_refused(override):
    with pytest.raises(UserError, match=r"run\.name: must be one non-empty folder name") as e:
        recipes.load(SMALL, [override])
    assert "\n" not in str(e.value)


def test_a_home_folder_in_a_path_key_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    r = recipes.load(SMALL, ['run.out_dir="~/x"', 'data.cache_dir="~/cache"', 'data.path="~/d"'])
    assert (r.run.out_dir, r.data.cache_dir, r.data.path) == (
        str(tmp_path / "x"),
        str(tmp_path / "cache"),
        str(tmp_path / "d"),
    )


def test_absurd_thread_counts_are_refused():
    with pytest.raises(UserError, match=r"run\.threads: must be <= 1024, got 100000"):
        recipes.load(SMALL, ["run.threads=100000"])
    proc = command("horizon", "--threads", "100000")
    assert_user_error(proc, "--threads: must be from 1 to 1024, got 100000")
