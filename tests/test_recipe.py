"""Recipes: validation that reports every problem, overrides, extends, dump."""

import tomllib
from pathlib import Path

import pytest

from altgrad_triton import recipe as recipes
from altgrad_triton.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="r.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_shipped_recipe_is_valid():
    files = list((ROOT / "recipes").rglob("*.toml"))  # the _*.toml bases load on their own too
    assert len(files) >= 23
    for p in files:
        r = recipes.load(p)
        assert r.run.name


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
        "elementwise",
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
