"""Downloads against a local HTTP server on 127.0.0.1: verified, atomic, one-line errors.

The URL/sha256 table is patched per test; nothing here touches the internet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from altgrad_triton.data import (
    CACHE_ENV,
    SOURCES,
    CorpusSource,
    RemoteFile,
    download_corpus,
    load_corpus,
    resolve_cache_dir,
)
from altgrad_triton.errors import UserError

WIKI = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
TEXTS = ("a b c\n\nb a\n", "a c\n", "c b\n")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path/'www'`` on an ephemeral 127.0.0.1 port; yield (folder, base URL)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port has no listener (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/wikitext-2-v1.zip"


def make_zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def wikitext_zip(root: str = "wikitext-2", names=WIKI, texts=TEXTS) -> bytes:
    return make_zip({f"{root}/{n}": t for n, t in zip(names, texts, strict=True)})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serve_wikitext2(monkeypatch, www: Path, url: str, payload: bytes, digest: str | None) -> None:
    (www / "wikitext-2-v1.zip").write_bytes(payload)
    remote = RemoteFile(f"{url}/wikitext-2-v1.zip", "wikitext-2-v1.zip", digest)
    patched = CorpusSource("wikitext-2", (remote,), WIKI, archive_root="wikitext-2")
    monkeypatch.setitem(SOURCES, "wikitext-2", patched)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_download_verifies_extracts_and_is_reused(server, tmp_path, monkeypatch):
    www, url = server
    payload = wikitext_zip()
    serve_wikitext2(monkeypatch, www, url, payload, sha256(payload))
    cache = tmp_path / "cache"
    corpus = load_corpus("wikitext-2", None, cache)
    assert corpus.vocab.itos[:4] == ["a", "b", "c", "<eos>"]
    assert len(corpus.train) == 8 and corpus.closed_vocabulary
    assert sorted(p.name for p in cache.iterdir()) == ["wikitext-2"]  # no zip, no partials
    assert sorted(p.name for p in (cache / "wikitext-2").iterdir()) == sorted(WIKI)
    # A second load reads the cache: the server may be gone.
    remote = RemoteFile(closed_port_url(), "wikitext-2-v1.zip", sha256(payload))
    monkeypatch.setitem(
        SOURCES, "wikitext-2", CorpusSource("wikitext-2", (remote,), WIKI, "wikitext-2")
    )
    assert load_corpus("wikitext-2", None, cache).source == str(cache / "wikitext-2")


def test_checksum_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    www, url = server
    serve_wikitext2(monkeypatch, www, url, wikitext_zip(), "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as e:
        load_corpus("wikitext-2", None, cache)
    message = one_line(e)
    assert "sha256" in message and "0" * 64 in message
    assert str(cache / "wikitext-2") in message and "wiki.train.tokens" in message
    assert list(cache.iterdir()) == []


def test_unreachable_server_says_where_to_put_the_files(tmp_path, monkeypatch):
    remote = RemoteFile(closed_port_url(), "wikitext-2-v1.zip", "0" * 64)
    monkeypatch.setitem(
        SOURCES, "wikitext-2", CorpusSource("wikitext-2", (remote,), WIKI, "wikitext-2")
    )
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as e:
        download_corpus("wikitext-2", cache)
    message = one_line(e)
    assert f"in {cache / 'wikitext-2'}/" in message
    assert "wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens" in message
    assert list(cache.iterdir()) == []


def test_http_error_is_a_user_error(server, tmp_path, monkeypatch):
    _, url = server
    remote = RemoteFile(f"{url}/nothing-here.zip", "wikitext-2-v1.zip", "0" * 64)
    monkeypatch.setitem(
        SOURCES, "wikitext-2", CorpusSource("wikitext-2", (remote,), WIKI, "wikitext-2")
    )
    with pytest.raises(UserError) as e:
        download_corpus("wikitext-2", tmp_path / "cache")
    assert "HTTP 404" in one_line(e)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"not a zip at all",
        wikitext_zip(names=WIKI[:2], texts=TEXTS[:2]),  # a file missing
        wikitext_zip(root="other-folder"),  # the wrong top folder
        make_zip({"../escape.txt": "x", **{f"wikitext-2/{n}": "a\n" for n in WIKI}}),
    ],
    ids=["not-zip", "missing-file", "wrong-root", "path-escape"],
)
def test_bad_archive_with_matching_checksum_leaves_nothing(server, tmp_path, monkeypatch, payload):
    www, url = server
    serve_wikitext2(monkeypatch, www, url, payload, sha256(payload))
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as e:
        download_corpus("wikitext-2", cache)
    assert str(cache / "wikitext-2") in one_line(e)
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_plain_files_source_like_ptb(server, tmp_path, monkeypatch):
    www, url = server
    names = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
    files = []
    for name, text in zip(names, TEXTS, strict=True):
        (www / name).write_text(text)
        files.append(RemoteFile(f"{url}/{name}", name, sha256(text.encode()), len(text)))
    monkeypatch.setitem(SOURCES, "ptb", CorpusSource("ptb", tuple(files), names))
    corpus = load_corpus("ptb", None, tmp_path / "cache")
    assert corpus.name == "ptb" and len(corpus.valid) == 3
    assert sorted(p.name for p in (tmp_path / "cache" / "ptb").iterdir()) == sorted(names)


def test_unpinned_digest_warns_and_downloads(server, tmp_path, monkeypatch, capsys):
    www, url = server
    serve_wikitext2(monkeypatch, www, url, wikitext_zip(), None)
    folder = download_corpus("wikitext-2", tmp_path / "cache")
    assert (folder / "wiki.valid.tokens").read_text() == TEXTS[1]
    assert "no pinned sha256" in capsys.readouterr().err


def test_existing_incomplete_cache_folder_is_not_overwritten(tmp_path):
    folder = tmp_path / "cache" / "wikitext-2"
    folder.mkdir(parents=True)
    (folder / "wiki.train.tokens").write_text("mine\n")
    with pytest.raises(UserError) as e:
        download_corpus("wikitext-2", tmp_path / "cache")
    assert "wiki.valid.tokens" in one_line(e)
    assert (folder / "wiki.train.tokens").read_text() == "mine\n"


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv(CACHE_ENV)
    assert resolve_cache_dir(None) == Path.home() / ".cache" / "altgrad-triton"


def test_shipped_sources_are_pinned_and_current():
    assert set(SOURCES) == {"wikitext-2", "wikitext-103", "ptb"}
    for source in SOURCES.values():
        for remote in source.files:
            assert remote.sha256 is not None and len(remote.sha256) == 64
            assert remote.url.startswith("https://")
            assert "metamind" not in remote.url  # that host is gone


def test_the_missing_corpus_message_names_the_key_to_set(tmp_path):
    """Issue 32: it said "pass the folder holding them as path", naming no key."""
    from altgrad_triton.data.download import where_to_put

    line = where_to_put("wikitext-2", tmp_path)
    assert line.endswith("(or give the folder holding them as data.path=FOLDER)")
