"""Corpora as three 1-D LongTensors of token ids plus the vocabulary that made them.

Word level follows AWD-LSTM exactly (``line.split() + ['<eos>']`` for every line, empty
lines included, ids in order of first appearance in train), so token counts and
perplexities compare with published numbers: WikiText-2 valid/test are 217,646 /
245,569 tokens. Standard corpora are closed-vocabulary and checked to be so: an unknown
valid/test word means the files are not the official ones. A user's own folder ("text",
"chars") and the derived "wikitext-2-small" are open-vocabulary: unknown words become
``<unk>`` and are counted in :attr:`Corpus.unk_counts`.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import os
import re
import sys
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from altgrad_triton.config.names import char_level
from altgrad_triton.errors import UserError

from .download import corpus_cache_dir, download_corpus, where_to_put
from .vocab import EOS, UNK, Vocabulary

CORPORA = ("wikitext-2", "wikitext-103", "ptb", "wikitext-2-small", "text", "chars")
"""Names ``load_corpus`` accepts."""

SPLITS = ("train", "valid", "test")

Level = Literal["word", "char"]


def corpus_level(corpus: str) -> Level:
    """The corpus ``corpus``'s tokens: characters or words, by the package's one rule
    (``names.char_level``)."""
    return "char" if char_level(corpus) else "word"


WIKITEXT_LAYOUTS = (
    ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    ("train.txt", "valid.txt", "test.txt"),
)
PTB_LAYOUTS = (
    ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    ("train.txt", "valid.txt", "test.txt"),
)
CHAR_LAYOUTS = (("train.txt", "valid.txt", "test.txt"),)

CHAR_SPLIT_PERCENT = (90, 5, 5)
"""How a single character-level file is cut: first 90 % train, next 5 % valid, rest test."""

ARTICLE_HEADER = re.compile(r" = [^=].* = ")
"""A WikiText article title line (``' = Title = '``, one ``=`` each side), newline removed.

Section lines (``' = = Section = = '``) do not match: the character after ``' = '`` is ``=``.
"""

# sha256 of the official WikiText-2 wiki.valid.tokens / wiki.test.tokens (their SHA-1s,
# 0418625c... and c7b8ce0a..., are the ones gluon-nlp publishes for the files in
# wikitext-2-v1.zip) and of the wikitext-2-small split derived from them (the sums
# listed in shared/data/README.md). They make "wikitext-2-small" mean one exact text.
WT2_OFFICIAL_SHA256 = {
    "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
}
WT2_SMALL_SHA256 = {
    "train": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "valid": "2c432cb99006b9d132623600d3e9f3ab30c6b1036a25c66d963f1dfa1ecad372",
    "test": "1f8febb1ffd7d4f5ba8bd91633861d419ac1744314a4e42d676593e91ad3e2d7",
}


@dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenised corpus, ready for :func:`batchify`.

    ``unk_counts`` maps "valid"/"test" to how many of its tokens were not in the train
    vocabulary and became ``<unk>`` (always 0 for a closed-vocabulary corpus, where such a
    token is an error). ``source`` says where the text was read, for logs and reports.
    """

    name: str
    level: Level
    vocab: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    unk_counts: dict[str, int]
    closed_vocabulary: bool
    source: str = ""

    def split(self, name: str) -> torch.Tensor:
        """The ids of split ``name`` ("train", "valid" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)


def load_corpus(
    corpus: str,
    path: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    *,
    download: bool = True,
) -> Corpus:
    """Read (and for the standard corpora, download if needed) a corpus by name.

    * "wikitext-2", "wikitext-103", "ptb": a folder in WikiText (``wiki.*.tokens``) or PTB
      (``ptb.*.txt``) layout, or ``train/valid/test.txt``; when ``path`` is None or holds no
      such files, the copy in the cache dir, downloaded there if missing (``download``).
    * "wikitext-2-small": the official WikiText-2 valid/test files (derived, see
      :func:`derive_wikitext2_small`) or the split itself from ``path``; without a path,
      derived from the copy of those two files shipped inside the package (no network).
    * "text": a user's folder in WikiText layout, open vocabulary.
    * "chars": a text file cut 90/5/5 by characters, or a folder of train/valid/test.txt.
    """
    if corpus not in CORPORA:
        close = difflib.get_close_matches(str(corpus), CORPORA, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown corpus {corpus!r}: {hint}choose one of {', '.join(CORPORA)}")
    where = Path(path).expanduser() if path not in (None, "") else None
    if corpus in ("wikitext-2", "wikitext-103", "ptb"):
        return _load_standard(corpus, where, cache_dir, download)
    if corpus == "wikitext-2-small":
        return _load_wikitext2_small(where)
    if corpus == "text":
        return _load_text(where)
    return _load_chars(where)


def derive_wikitext2_small(valid_text: str, test_text: str) -> tuple[str, str, str]:
    """Build the CPU-sized benchmark (train, valid, test) from WikiText-2's valid and test.

    train is the valid text unchanged; valid and test are the test text cut just before
    the article header line nearest its middle line (index ``n_lines // 2``; a tie goes to
    the earlier header), so ``valid + test == test_text`` byte for byte and no article is
    split between the two. Lines end at ``"\\n"`` only (Unicode line separators inside
    Wikipedia text are not line breaks). Raises ValueError when no header follows line 0.
    """
    lines = _split_lines(test_text)
    headers = [
        i for i, line in enumerate(lines) if i > 0 and ARTICLE_HEADER.fullmatch(line.rstrip("\r\n"))
    ]
    if not headers:
        raise ValueError("the test text has no article header line (' = Title = ') after line 0")
    middle = len(lines) // 2
    cut = min(headers, key=lambda i: (abs(i - middle), i))
    return valid_text, "".join(lines[:cut]), "".join(lines[cut:])


# ----------------------------------------------------------------------------- loaders


def _load_standard(name: str, path: Path | None, cache_dir, download: bool) -> Corpus:
    layouts = PTB_LAYOUTS if name == "ptb" else WIKITEXT_LAYOUTS
    files = _from_user_path(name, path, layouts)
    if files is None:
        cached = corpus_cache_dir(name, cache_dir)
        files = _find_layout(cached, layouts) if cached.is_dir() else None
        if files is None:
            if not download:
                raise UserError(
                    f"{name} is not in {cached} and downloading is off; "
                    f"{where_to_put(name, cached)}"
                )
            files = _find_layout(download_corpus(name, cache_dir), layouts)
            assert files is not None
    return _word_corpus(name, files, closed=True)


PACKAGED_WIKITEXT2_SMALL = Path(__file__).with_name("wikitext-2-small")
"""The official WikiText-2 valid and test files, gzipped (CC BY-SA 3.0; see the README there)."""


def _load_wikitext2_small(path: Path | None) -> Corpus:
    name = "wikitext-2-small"
    found = None
    if path is not None:
        if path.is_file():
            raise UserError(f"{name}: path {path} is a file; give the folder holding it")
        found = _wikitext2_small_texts(path) if path.is_dir() else None
        if found is None:
            _note(f"{path} holds no WikiText-2 valid/test files; using the packaged copy")
    texts, labels, source = found or _packaged_wikitext2_small()
    sources = {s: (labels[s], texts[s]) for s in SPLITS}
    return _word_corpus(name, sources, closed=False, source=source)


def _packaged_wikitext2_small():
    """(texts, labels, source) of wikitext-2-small derived from the packaged files."""
    raw = {}
    for split in ("valid", "test"):
        file = PACKAGED_WIKITEXT2_SMALL / f"wiki.{split}.tokens.gz"
        try:
            raw[split] = gzip.decompress(_read_bytes(file))
        except (OSError, EOFError) as e:
            raise UserError(f"{file} is damaged ({e}): reinstall altgrad-triton") from None
        if _sha256(raw[split]) != WT2_OFFICIAL_SHA256[split]:
            raise UserError(f"{file} is not the official file (sha256 differs): reinstall")
    derived = derive_wikitext2_small(raw["valid"].decode(), raw["test"].decode())
    texts = dict(zip(SPLITS, derived, strict=True))
    folder = PACKAGED_WIKITEXT2_SMALL
    labels = {
        "train": f"{folder}/wiki.valid.tokens.gz",
        "valid": f"{folder}/wiki.test.tokens.gz [first half]",
        "test": f"{folder}/wiki.test.tokens.gz [second half]",
    }
    return texts, labels, f"{folder} (packaged; derived from WikiText-2's valid and test files)"


def _load_text(path: Path | None) -> Corpus:
    layout = "wiki.{train,valid,test}.tokens or {train,valid,test}.txt"
    if path is None:
        raise UserError(f"corpus 'text' needs path: a folder holding {layout}")
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise UserError(f"corpus 'text': path {path} {what}; give a folder holding {layout}")
    files = _find_layout(path, WIKITEXT_LAYOUTS)
    if files is None:
        raise UserError(f"corpus 'text': {path} holds no corpus files; put {layout} there")
    return _word_corpus("text", files, closed=False)


def _load_chars(path: Path | None) -> Corpus:
    wanted = "a text file (cut 90/5/5) or a folder holding train.txt, valid.txt, test.txt"
    if path is None:
        raise UserError(f"corpus 'chars' needs path: {wanted}")
    if path.is_file():
        text = _read_text(path)
        n = len(text)
        n_train = n * CHAR_SPLIT_PERCENT[0] // 100
        n_valid = n * CHAR_SPLIT_PERCENT[1] // 100
        if n_valid < 2:
            raise UserError(
                f"corpus 'chars': {path} has {n} characters; the 90/5/5 split needs at least "
                "40: give a longer text"
            )
        texts = {
            "train": text[:n_train],
            "valid": text[n_train : n_train + n_valid],
            "test": text[n_train + n_valid :],
        }
        labels = {s: f"{path} [{s} {p}%]" for s, p in zip(SPLITS, CHAR_SPLIT_PERCENT, strict=True)}
        source = str(path)
    elif path.is_dir():
        files = _find_layout(path, CHAR_LAYOUTS)
        if files is None:
            raise UserError(f"corpus 'chars': {path} holds no train.txt/valid.txt/test.txt")
        texts = {s: _read_text(f) for s, f in files.items()}
        labels = {s: str(f) for s, f in files.items()}
        source = str(path)
    else:
        raise UserError(f"corpus 'chars': path {path} does not exist; give {wanted}")
    return _char_corpus(texts, labels, source)


def _from_user_path(name: str, path: Path | None, layouts) -> dict[str, Path] | None:
    """The files in a user's folder for a downloadable corpus, or None to use the cache."""
    if path is None:
        return None
    if path.is_file():
        raise UserError(f"{name}: path {path} is a file; give the folder holding the splits")
    files = _find_layout(path, layouts) if path.is_dir() else None
    if files is None:
        _note(f"{path} holds no {name} files; using the cache")
    return files


def _find_layout(directory: Path, layouts) -> dict[str, Path] | None:
    """The first naming whose three files all exist; UserError if one is half there."""
    partial = []
    for names in layouts:
        present = [n for n in names if (directory / n).is_file()]
        if len(present) == len(names):
            return {s: directory / n for s, n in zip(SPLITS, names, strict=True)}
        if present:
            partial.append((present, [n for n in names if n not in present]))
    if partial:
        present, missing = partial[0]
        raise UserError(
            f"{directory} has {', '.join(present)} but not {', '.join(missing)}: "
            "put the missing file(s) there"
        )
    return None


def _wikitext2_small_texts(directory: Path):
    """(texts, labels, source) for wikitext-2-small from ``directory``, or None.

    Recognises the split itself (train/valid/test.txt with the pinned sums) or the
    official WikiText-2 valid/test files (either naming) to derive it from.
    """
    mismatched = []
    split = [directory / f"{s}.txt" for s in SPLITS]
    if all(f.is_file() for f in split):
        raw = [_read_bytes(f) for f in split]
        if all(_sha256(b) == WT2_SMALL_SHA256[s] for b, s in zip(raw, SPLITS, strict=True)):
            texts = {s: _decode(b, f) for s, b, f in zip(SPLITS, raw, split, strict=True)}
            return texts, {s: str(f) for s, f in zip(SPLITS, split, strict=True)}, str(directory)
    for valid_name, test_name in (
        ("wiki.valid.tokens", "wiki.test.tokens"),
        ("valid.txt", "test.txt"),
    ):
        valid_file, test_file = directory / valid_name, directory / test_name
        if not (valid_file.is_file() and test_file.is_file()):
            continue
        valid_raw, test_raw = _read_bytes(valid_file), _read_bytes(test_file)
        if (_sha256(valid_raw), _sha256(test_raw)) != (
            WT2_OFFICIAL_SHA256["valid"],
            WT2_OFFICIAL_SHA256["test"],
        ):
            mismatched.append(f"{valid_name} + {test_name}")
            continue
        derived = derive_wikitext2_small(
            _decode(valid_raw, valid_file), _decode(test_raw, test_file)
        )
        texts = dict(zip(SPLITS, derived, strict=True))
        labels = {
            "train": str(valid_file),
            "valid": f"{test_file} [first half]",
            "test": f"{test_file} [second half]",
        }
        return texts, labels, f"{directory} (derived from {valid_name}, {test_name})"
    if mismatched:
        raise UserError(
            f"wikitext-2-small: {', '.join(mismatched)} in {directory} are not the official "
            "WikiText-2 files (sha256 differs): put the official wiki.valid.tokens and "
            "wiki.test.tokens there, or use corpus 'text' for other data"
        )
    return None


# ----------------------------------------------------------------------------- encoding


def encode_file(path: Path, vocab: Vocabulary, level: Level) -> tuple[torch.Tensor, Counter]:
    """A text file's ids under a trained model's ``vocab``, tokenised as its corpus was (words:
    each line split on whitespace, plus ``<eos>``; characters: every character), and a
    Counter of the tokens that were not in ``vocab`` and became ``<unk>``.

    UserError for a missing, unreadable or empty file, one too short to score (fewer than 2
    tokens), or unknown tokens when ``vocab`` has no ``<unk>`` to map them to.
    """
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(f"{path} {what}: give a text file")
    if level == "char":
        text = _read_text(path)
        unknown: Counter[str] = Counter(c for c in text if c not in vocab.stoi)
        fallback = -1 if vocab.unk_index is None else vocab.unk_index
        ids = torch.tensor([vocab.stoi.get(c, fallback) for c in text], dtype=torch.long)
    else:
        ids, unknown = _encode_eval_words(path, vocab)
    if len(ids) == 0:
        raise UserError(f"{path} is empty: give a text to score")
    if unknown and vocab.unk_index is None:
        examples = ", ".join(repr(w) for w, _ in unknown.most_common(3))
        raise UserError(
            f"{path}: {sum(unknown.values())} tokens (e.g. {examples}) are not in the "
            f"vocabulary, which has no {UNK} to stand for them"
        )
    if len(ids) < 2:
        raise UserError(f"{path} holds 1 token; scoring needs 2 or more (inputs and targets)")
    return ids, unknown


_TextSource = Path | tuple[str, str]  # a file, or (label, text already in memory)


def _word_corpus(
    name: str, sources: dict[str, _TextSource], *, closed: bool, source: str | None = None
) -> Corpus:
    labels = {s: _label(src) for s, src in sources.items()}
    train, vocab = _encode_train_words(sources["train"])
    _check_length(name, "train", train, labels["train"])
    if not closed and UNK not in vocab:
        vocab = Vocabulary([*vocab.itos, UNK])
    encoded, unk_counts = {}, {}
    for split in ("valid", "test"):
        ids, unknown = _encode_eval_words(sources[split], vocab)
        n_unknown = sum(unknown.values())
        if closed and n_unknown:
            examples = ", ".join(repr(w) for w, _ in unknown.most_common(3))
            raise UserError(
                f"{name}: {labels[split]} has {n_unknown} tokens ({len(unknown)} distinct, "
                f"e.g. {examples}) missing from the vocabulary of {labels['train']}; {name} is "
                "closed-vocabulary, so these are not its official files: use corpus 'text' "
                "for your own data"
            )
        _check_length(name, split, ids, labels[split])
        encoded[split], unk_counts[split] = ids, n_unknown
    if source is None:
        source = str(Path(labels["train"]).parent)
    return Corpus(
        name=name,
        level=corpus_level(name),
        vocab=vocab,
        train=train,
        valid=encoded["valid"],
        test=encoded["test"],
        unk_counts=unk_counts,
        closed_vocabulary=closed,
        source=source,
    )


def _char_corpus(texts: dict[str, str], labels: dict[str, str], source: str) -> Corpus:
    name = "chars"
    vocab = Vocabulary([*dict.fromkeys(texts["train"]), UNK])
    stoi, unk = vocab.stoi, vocab.unk_index
    encoded, unk_counts = {}, {}
    for split in SPLITS:
        ids = [stoi.get(c, -1) for c in texts[split]]
        n_unknown = ids.count(-1)
        if n_unknown:
            ids = [unk if i < 0 else i for i in ids]
        _check_length(name, split, ids, labels[split])
        encoded[split] = torch.tensor(ids, dtype=torch.long)
        if split != "train":
            unk_counts[split] = n_unknown
    return Corpus(
        name=name,
        level=corpus_level(name),
        vocab=vocab,
        train=encoded["train"],
        valid=encoded["valid"],
        test=encoded["test"],
        unk_counts=unk_counts,
        closed_vocabulary=False,
        source=source,
    )


def _encode_train_words(src: _TextSource) -> tuple[torch.Tensor, Vocabulary]:
    """Ids of the train split and the vocabulary, built in one pass (first appearance)."""
    stoi: dict[str, int] = {}
    itos: list[str] = []
    ids = array("q")
    append, get = ids.append, stoi.get
    for line in _lines(src):
        words = line.split()
        words.append(EOS)
        for word in words:
            i = get(word)
            if i is None:
                i = stoi[word] = len(itos)
                itos.append(word)
            append(i)
    return _to_tensor(ids), Vocabulary(itos)


def _encode_eval_words(src: _TextSource, vocab: Vocabulary) -> tuple[torch.Tensor, Counter]:
    """Ids of a valid/test split and a Counter of the words not in ``vocab``."""
    stoi, unk = vocab.stoi, vocab.unk_index
    fallback = -1 if unk is None else unk
    ids = array("q")
    unknown: Counter[str] = Counter()
    for line in _lines(src):
        words = line.split()
        words.append(EOS)
        for word in words:
            i = stoi.get(word)
            if i is None:
                unknown[word] += 1
                i = fallback
            ids.append(i)
    return _to_tensor(ids), unknown


def _to_tensor(ids: array) -> torch.Tensor:
    """Wrap the int64 array without a copy (the tensor holds the array; it is never resized)."""
    if not ids:
        return torch.empty(0, dtype=torch.long)
    return torch.frombuffer(ids, dtype=torch.long)


def _check_length(name: str, split: str, ids, label: str) -> None:
    if len(ids) < 2:
        raise UserError(
            f"{name}: {label} holds {len(ids)} token(s); the {split} split needs at least 2 "
            "(an input and its target): give it real text"
        )


# ----------------------------------------------------------------------------- files


def _lines(src: _TextSource) -> Iterator[str]:
    """Lines of a file (universal newlines, as AWD-LSTM reads) or of in-memory text."""
    if isinstance(src, Path):
        try:
            with open(src, encoding="utf-8") as f:
                yield from f
        except UnicodeDecodeError as e:
            raise UserError(f"{src} is not UTF-8 text ({e.reason}): convert it to UTF-8") from None
        except OSError as e:
            raise UserError(f"cannot read {src} ({e.strerror or e}): check the path") from None
    else:
        yield from io.StringIO(src[1])


def _label(src: _TextSource) -> str:
    return str(src) if isinstance(src, Path) else src[0]


def _split_lines(text: str) -> list[str]:
    """Split after every "\\n", keeping it; ``"".join`` of the result is ``text``."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}): check the path") from None


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason}): convert it to UTF-8") from None


def _read_text(path: Path) -> str:
    """Exact characters of a file (no newline translation: "\\r" stays a character)."""
    return _decode(_read_bytes(path), path)


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)
