"""altgrad-generate on a tiny trained run: the same text for the same seed, and one line for
what it cannot do (a model without probabilities, too many words, a seed beyond 64 bits)."""

from __future__ import annotations

import shutil

import pytest

from altgrad_triton.cli import generate as generate_cli
from altgrad_triton.errors import UserError
from tests.helpers import assert_one_line_error
from tests.helpers import run_command as call


def test_generate_streams_the_same_text_for_the_same_seed(run_dir, capsys):
    first = call(generate_cli.main, capsys, run_dir, "--words", 30, "--seed", 3)
    again = call(generate_cli.main, capsys, run_dir, "--words", 30, "--seed", 3)
    other = call(generate_cli.main, capsys, run_dir, "--words", 30, "--seed", 4)
    assert first[0] == 0 and first[1] == again[1] != other[1]
    words = first[1].split()
    assert 0 < len(words) <= 30 and "<eos>" not in words  # <eos> became line breaks
    code, out, err = call(generate_cli.main, capsys, run_dir, "--prompt", "the zebra", "--words", 5)
    assert code == 0 and out.startswith("the zebra ")
    assert err.strip() == "note: prompt tokens not in the vocabulary, fed as <unk>: 'zebra'"


@pytest.mark.parametrize(
    "value, says",
    [
        (float("nan"), "the 'best' checkpoint's weights hold NaN or inf (decoder.bias)"),
        (3e38, "the model's next-token probabilities hold NaN or inf after 0 tokens"),
    ],
    ids=["nan-weights", "overflow"],
)
def test_generating_from_a_model_without_probabilities_is_one_line(
    run_dir, tmp_path, capsys, value, says
):
    """Issue 32: NaN weights (a diverged run) gave torch.multinomial's traceback."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    path = copy / "checkpoints" / "best" / "model.safetensors"
    weights = load_file(path)
    weights["decoder.bias"].fill_(value)  # finite 3e38 overflows once divided by 0.5
    save_file(weights, path)
    args = ("--words", 3, "--temperature", 0.5, "--device", "cpu")
    assert_one_line_error(call(generate_cli.main, capsys, copy, *args), f"{copy}: {says}")


def test_generate_refuses_more_words_than_any_use(run_dir, capsys):
    """Issue 32: ``--words 1000000000000`` was accepted."""
    for words in (10**12, 1_000_001, -1):
        assert_one_line_error(
            call(generate_cli.main, capsys, run_dir, "--words", words),
            f"--words: must be from 0 to 1,000,000, got {words}",
        )


def test_a_seed_beyond_64_bits_is_one_line(trained, capsys):
    from altgrad_triton import load_run
    from altgrad_triton.cli import generate as generate_cli

    with pytest.raises(UserError, match=r"seed: must be an integer from 0 to 2\*\*63 - 1"):
        load_run(trained).generate(5, seed=2**63)
    assert generate_cli.main([str(trained), "--seed", str(2**63), "--words", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: seed: must be an integer from 0 to 2**63 - 1, got {2**63}"]
