"""Corpora (``data/corpora.py``): vocabularies built from them, word and character corpora,
layouts, wikitext-2-small (no network; see test_download.py)."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest
import torch

from altgrad_triton.data import EOS, UNK, derive_wikitext2_small, load_corpus
from altgrad_triton.data.corpora import PACKAGED_WIKITEXT2_SMALL
from altgrad_triton.errors import UserError


def shared_data() -> Path:
    """shared/data beside the checkout (<clone>/../shared/data), or $ALTGRAD_SHARED_DATA."""
    env = os.environ.get("ALTGRAD_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


WT2_SMALL_SHA256 = {  # shared/data/wikitext-2-small/<split>.txt, the split as distributed
    "train": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "valid": "2c432cb99006b9d132623600d3e9f3ab30c6b1036a25c66d963f1dfa1ecad372",
    "test": "1f8febb1ffd7d4f5ba8bd91633861d419ac1744314a4e42d676593e91ad3e2d7",
}


def wikitext2_folders(tmp_path: Path) -> tuple[Path, Path]:
    """WikiText-2's official valid/test files and the wikitext-2-small split: shared/data's
    where present; else the package's own copy of the official files and the split derived
    from it (checked against WT2_SMALL_SHA256), so that the tests run on a CI machine too."""
    root = shared_data()
    if (root / "wikitext-2").is_dir() and (root / "wikitext-2-small").is_dir():
        return root / "wikitext-2", root / "wikitext-2-small"
    texts = {
        split: gzip.decompress((PACKAGED_WIKITEXT2_SMALL / f"wiki.{split}.tokens.gz").read_bytes())
        for split in ("valid", "test")
    }
    official = tmp_path / "wikitext-2"
    official.mkdir(parents=True)
    for split, raw in texts.items():
        (official / f"{split}.txt").write_bytes(raw)
    derived = derive_wikitext2_small(texts["valid"].decode(), texts["test"].decode())
    split_folder = write_split(tmp_path / "wikitext-2-small", TXT, derived)
    return official, split_folder


def write_split(folder: Path, names: tuple[str, str, str], texts: tuple[str, str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, texts, strict=True):
        (folder / name).write_text(text, encoding="utf-8", newline="")
    return folder


WIKI = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
TXT = ("train.txt", "valid.txt", "test.txt")
PTB = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
TINY = ("a b\n\nb c a\n", "c a\n", "b b\n")


def assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_eos_per_line_and_first_appearance_order(tmp_path):
    corpus = load_corpus("wikitext-2", write_split(tmp_path, WIKI, TINY), tmp_path / "cache")
    v = corpus.vocab
    assert v.itos == ["a", "b", EOS, "c"]  # closed corpus: nothing appended
    assert v.stoi == {t: i for i, t in enumerate(v.itos)}
    assert corpus.vocab.decode(corpus.train) == ["a", "b", EOS, EOS, "b", "c", "a", EOS]
    assert (corpus.train == v.stoi[EOS]).sum().item() == 3  # one per line, empty line too
    assert corpus.valid.tolist() == [v.stoi["c"], v.stoi["a"], v.stoi[EOS]]
    assert corpus.level == "word" and corpus.closed_vocabulary
    assert corpus.unk_counts == {"valid": 0, "test": 0}
    assert corpus.train.dtype == torch.long


# ----------------------------------------------------------------------------- word corpora


def test_text_maps_unknown_words_to_unk_and_counts_them(tmp_path):
    folder = write_split(tmp_path, TXT, ("a b a\n", "a q\nr r\n", "b q\n"))
    corpus = load_corpus("text", folder, None)
    v = corpus.vocab
    assert v.itos == ["a", "b", EOS, UNK]  # <unk> appended: train had none
    assert corpus.unk_counts == {"valid": 3, "test": 1}
    assert corpus.valid.tolist() == [v.stoi[t] for t in ["a", UNK, EOS, UNK, UNK, EOS]]
    assert corpus.test.tolist() == [v.stoi["b"], v.unk_index, v.stoi[EOS]]
    assert not corpus.closed_vocabulary


def test_text_keeps_the_train_unk_token(tmp_path):
    folder = write_split(tmp_path, WIKI, (f"a {UNK} b\n", "a zz\n", "b\n"))
    corpus = load_corpus("text", folder, None)
    assert corpus.vocab.itos == ["a", UNK, "b", EOS]
    assert corpus.valid.tolist() == [0, 1, 3]


def test_closed_vocabulary_violation_names_file_and_count(tmp_path):
    folder = write_split(tmp_path, WIKI, ("a b\n", "a b\n", "a zz zz yy\n"))
    with pytest.raises(UserError) as e:
        load_corpus("wikitext-2", folder, tmp_path / "cache", download=False)
    message = assert_one_line(e)
    assert str(folder / "wiki.test.tokens") in message
    assert "3 tokens (2 distinct" in message and "'zz'" in message


@pytest.mark.parametrize(
    ("corpus", "names"),
    [("wikitext-2", WIKI), ("wikitext-2", TXT), ("wikitext-103", WIKI), ("ptb", PTB), ("ptb", TXT)],
)
def test_layout_detection_accepts_both_namings(tmp_path, corpus, names):
    folder = write_split(tmp_path / "d", names, TINY)
    loaded = load_corpus(corpus, str(folder), tmp_path / "cache", download=False)
    assert loaded.name == corpus and loaded.source == str(folder)
    assert len(loaded.train) == 8 and len(loaded.test) == 3


def test_layout_detection_reports_a_missing_file(tmp_path):
    (tmp_path / "wiki.train.tokens").write_text("a\n")
    (tmp_path / "wiki.valid.tokens").write_text("a\n")
    with pytest.raises(UserError) as e:
        load_corpus("text", tmp_path, None)
    assert "not wiki.test.tokens" in assert_one_line(e)


def test_standard_corpus_missing_without_download_says_where_to_put_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        load_corpus("ptb", empty, tmp_path / "cache", download=False)
    message = assert_one_line(e)
    assert str(tmp_path / "cache" / "ptb") in message
    assert "ptb.train.txt, ptb.valid.txt, ptb.test.txt" in message
    assert "using the cache" in capsys.readouterr().err


def test_unknown_corpus_and_bad_paths(tmp_path):
    with pytest.raises(UserError) as e:
        load_corpus("wikitext2", None, tmp_path)
    assert "'wikitext-2'" in assert_one_line(e)
    with pytest.raises(UserError):
        load_corpus("text", None, None)
    with pytest.raises(UserError):
        load_corpus("text", tmp_path / "missing", None)
    with pytest.raises(UserError):
        load_corpus("chars", tmp_path / "missing.txt", None)
    with pytest.raises(UserError):  # a split too short to give one input/target pair
        load_corpus("text", write_split(tmp_path / "s", TXT, ("a b\n", "", "a\n")), None)


# ----------------------------------------------------------------------------- characters


def test_chars_file_splits_90_5_5_and_newline_is_a_character(tmp_path):
    text = "".join(f"line {i % 10}\n" for i in range(143))[:1000] + "\u00e9"
    (tmp_path / "input.txt").write_text(text, encoding="utf-8", newline="")
    corpus = load_corpus("chars", tmp_path / "input.txt", None)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (900, 50, 51)
    assert corpus.level == "char" and "\n" in corpus.vocab
    rebuilt = "".join(corpus.vocab.decode(torch.cat([corpus.train, corpus.valid, corpus.test])))
    assert rebuilt == text[:-1] + UNK  # "é" only occurs in test
    assert corpus.unk_counts == {"valid": 0, "test": 1}


def test_chars_directory_reads_each_split(tmp_path):
    folder = write_split(tmp_path, TXT, ("ab\nba\n", "abz", "b\r\na"))
    corpus = load_corpus("chars", folder, None)
    assert corpus.vocab.itos == ["a", "b", "\n", UNK]
    assert corpus.unk_counts == {"valid": 1, "test": 1}  # "z"; "\r" kept as a character
    assert len(corpus.test) == 4


# ----------------------------------------------------------------------------- wikitext-2-small


def synthetic_wikitext() -> tuple[str, int]:
    """A made-up test text and the line index the cut must fall on."""
    lines = [" \n", " = First = \n", " \n"]
    lines += [f" body {i} .\n" for i in range(6)]  # lines 3..8
    lines += [" = Second = \n"]  # line 9: 12 away from the middle
    lines += [f" text {i} .\n" for i in range(10)]  # 10..19
    lines += [" = = Section = = \n"]  # line 20: 2 from the middle, but a section heading
    lines += [f" more {i} .\n" for i in range(4)]  # 21..24
    lines += [" = Third ( film ) = \n"]  # line 25: 3 from the middle
    lines += [f" tail {i} .\n" for i in range(16)] + [" = Last = \n", " end"]  # 26..43
    assert len(lines) // 2 == 22  # the middle line; " end" has no newline
    return "".join(lines), 25


def test_derive_wikitext2_small_cuts_before_the_header_nearest_the_middle():
    test_text, cut = synthetic_wikitext()
    train, valid, test = derive_wikitext2_small("valid text\n", test_text)
    assert train == "valid text\n"
    assert valid + test == test_text
    assert test.startswith(" = Third ( film ) = \n")
    assert valid.count("\n") == cut


def test_derive_wikitext2_small_tie_goes_to_the_earlier_header_and_needs_one():
    text = "x\ny\n = A = \nw\n = B = \nz"  # 6 lines, middle 3: headers at 2 and 4
    assert derive_wikitext2_small("", text)[1:] == ("x\ny\n", " = A = \nw\n = B = \nz")
    with pytest.raises(ValueError):
        derive_wikitext2_small("", " = Only on line 0 = \nno header after it\n")


def test_derive_wikitext2_small_gives_the_distributed_split_byte_for_byte(tmp_path):
    official, split = wikitext2_folders(tmp_path)
    valid = (official / "valid.txt").read_bytes().decode("utf-8")
    test = (official / "test.txt").read_bytes().decode("utf-8")
    derived = derive_wikitext2_small(valid, test)
    for name, text in zip(("train", "valid", "test"), derived, strict=True):
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == WT2_SMALL_SHA256[name], name
        assert (split / f"{name}.txt").read_bytes() == text.encode("utf-8"), name


def test_wikitext2_small_loads_from_official_files_or_the_split(tmp_path):
    official, folder = wikitext2_folders(tmp_path / "data")
    derived = load_corpus("wikitext-2-small", official, tmp_path, download=False)
    split = load_corpus("wikitext-2-small", folder, tmp_path, download=False)
    assert "derived" in derived.source and "derived" not in split.source
    assert derived.vocab == split.vocab
    for name in ("train", "valid", "test"):
        assert torch.equal(derived.split(name), split.split(name))
    assert len(derived.train) == 217646  # WT2 valid with AWD-LSTM's <eos> per line
    assert len(derived.valid) + len(derived.test) == 245569
    assert not derived.closed_vocabulary
    assert derived.unk_counts["valid"] > 0 and derived.unk_counts["test"] > 0


def test_wikitext2_small_needs_no_path_nor_network(tmp_path, monkeypatch):
    """The packaged copy: no data.path, no cache, and any download attempt fails the test."""
    from altgrad_triton.data import corpora

    def no_download(*a, **k):
        raise AssertionError("wikitext-2-small must not download")

    monkeypatch.setattr(corpora, "download_corpus", no_download)
    packaged = load_corpus("wikitext-2-small", None, tmp_path / "empty-cache", download=False)
    assert "packaged" in packaged.source
    assert len(packaged.train) == 217646 and len(packaged.valid) + len(packaged.test) == 245569
    assert not list(tmp_path.iterdir())  # nothing written to the cache
    root = shared_data() / "wikitext-2-small"
    if root.is_dir():  # the same corpus as the split in shared/data, token for token
        split = load_corpus("wikitext-2-small", root, tmp_path, download=False)
        assert packaged.vocab == split.vocab
        for name in ("train", "valid", "test"):
            assert torch.equal(packaged.split(name), split.split(name))


def test_wikitext2_small_from_a_folder_without_its_files_uses_the_packaged_copy(tmp_path, capsys):
    corpus = load_corpus("wikitext-2-small", tmp_path, tmp_path / "cache", download=False)
    assert "packaged" in corpus.source
    assert "using the packaged copy" in capsys.readouterr().err


def test_wikitext2_small_refuses_files_that_are_not_the_official_ones(tmp_path):
    test_text, _ = synthetic_wikitext()
    folder = write_split(tmp_path / "d", ("valid.txt", "test.txt", "x"), ("a\n", test_text, ""))
    with pytest.raises(UserError) as e:
        load_corpus("wikitext-2-small", folder, tmp_path / "cache", download=False)
    message = assert_one_line(e)
    assert "not the official" in message and str(folder) in message
