"""The recorded config check: what ``altgrad-tune --check-configs --record`` measured, per
Triton version, so that CI can check every candidate on every architecture without
compiling ~1,800 kernels per Triton version on two cores.

``tests/fixtures/config_fit/<triton version>.json`` holds, for each distinct kernel the
check compiles (:func:`configcheck.compile_id`: architecture, function, specialised
signature, launch options), its shared memory, registers and spill bytes, and a label to
read it by; and, per kernel function, a fingerprint of its source and of the
``@triton.jit`` functions and constants it uses (:func:`fingerprint`). Triton 3.6 and 3.9
compile differently (their own LLVM and ptxas), hence one file per version.

An entry is *current* when its id is one the check would compile now and its function's
fingerprint is unchanged. tests/tune/test_fitrecord.py asserts that the record for the
installed Triton has a current entry for every spec of the full check, that none would fail
(shared memory over its architecture's limit, or spills), and compiles a sample again to
confirm the record still says what the compiler says. When a kernel, its candidates or
its shapes change, rerun ``altgrad-tune --check-configs --record tests/fixtures/config_fit``
under each Triton version CI tests.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_text_atomic
from . import configcheck
from .configcheck import CompileResult, CompileSpec

FORMAT = "altgrad-triton config-fit record v1"
DEFAULT_DIR = Path("tests") / "fixtures" / "config_fit"


def triton_version() -> str:
    import triton

    return triton.__version__


def record_path(directory: str | os.PathLike[str] = DEFAULT_DIR,
                version: str | None = None) -> Path:  # fmt: skip
    """``<directory>/<Triton version>.json``."""
    return Path(directory) / f"{version or triton_version()}.json"


# ----------------------------------------------------------------------------- sources


def fingerprint(module: str, fn: str) -> str:
    """A hash of a kernel function's source and of what its compile reads from the
    project: the kernel functions of this package it calls (recursively) and the constant
    values of the globals it names. Unlike Triton's own ``cache_key`` it ignores line
    numbers (an edit elsewhere in the file leaves it unchanged), and it reads the same
    under the interpreter as compiled (Triton's own functions go with its version)."""
    from .. import kernels

    root = configcheck.python_function(getattr(getattr(kernels, module), fn))
    parts, seen, todo = [], set(), [root]
    while todo:
        func = todo.pop()
        if func in seen:
            continue
        seen.add(func)
        src = textwrap.dedent(inspect.getsource(func))
        parts.append(f"{func.__module__}.{func.__name__}\n{src}")
        names = sorted({n.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name)})
        for name in names:
            value = func.__globals__.get(name)
            if isinstance(value, (bool, int, float, str)):
                parts.append(f"{name}={value!r}")
                continue
            try:
                called = configcheck.python_function(value)
            except AttributeError:  # not a kernel function
                continue
            if called.__module__.startswith(kernels.__name__):
                todo.append(called)
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def _function(spec: CompileSpec) -> str:
    return f"{spec.module}.{spec.fn}"


def fingerprints(specs: Sequence[CompileSpec]) -> dict[str, str]:
    """``module.fn`` -> :func:`fingerprint` for every function among ``specs``."""
    names = sorted({(s.module, s.fn) for s in specs})
    return {f"{m}.{f}": fingerprint(m, f) for m, f in names}


# ----------------------------------------------------------------------------- the file


@dataclass
class Record:
    """One Triton version's recorded results."""

    triton: str
    functions: dict[str, str] = field(default_factory=dict)  # module.fn -> fingerprint
    entries: dict[str, dict] = field(default_factory=dict)  # compile id -> entry


def _entry(r: CompileResult) -> dict:
    s = r.spec
    return {"label": f"{s.arch} {s.kernel} {s.dtype} {s.config} ({s.shape})",
            "fn": _function(s), "shared": r.shared_bytes, "registers": r.registers,
            "spills": r.spill_bytes, "error": r.error}  # fmt: skip


def write(path: str | os.PathLike[str], results: Sequence[CompileResult]) -> Path:
    """Record ``results`` (every spec of a full check) at ``path``: one entry per distinct
    kernel, one line each, sorted, so that a refresh reads as a diff."""
    specs = [r.spec for r in results]
    entries: dict[str, dict] = {}
    for r in results:
        entries.setdefault(configcheck.compile_id(r.spec), _entry(r))
    lines = [f"  {json.dumps(k)}: {json.dumps(entries[k], sort_keys=True)}"
             for k in sorted(entries)]  # fmt: skip
    head = {"format": FORMAT, "triton": triton_version(), "functions": fingerprints(specs)}
    text = json.dumps(head, indent=1, sort_keys=True)[:-2]  # drop the closing "\n}"
    text += ',\n "entries": {\n' + ",\n".join(lines) + "\n }\n}\n"
    return write_text_atomic(Path(path), text)


def load(path: str | os.PathLike[str]) -> Record:
    """The record at ``path``; ValueError when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable record ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return Record(str(data["triton"]), dict(data["functions"]), dict(data["entries"]))


@dataclass
class Lookup:
    """Specs looked up in a record: their recorded results, and the specs it cannot answer."""

    results: list[CompileResult]  # one per spec found, in the specs' order
    missing: list[CompileSpec]  # no entry for the spec's kernel
    stale: list[CompileSpec]  # an entry, but the function's source changed since


def lookup(record: Record, specs: Sequence[CompileSpec]) -> Lookup:
    """Each spec's recorded result (:class:`Lookup`)."""
    now = fingerprints(specs)
    out = Lookup([], [], [])
    for spec in specs:
        entry = record.entries.get(configcheck.compile_id(spec))
        if entry is None:
            out.missing.append(spec)
        elif record.functions.get(_function(spec)) != now[_function(spec)]:
            out.stale.append(spec)
        else:
            r = CompileResult(spec, registers=entry["registers"], spill_bytes=entry["spills"],
                              shared_bytes=entry["shared"], error=entry["error"],
                              recorded=True)  # fmt: skip
            r.fits = configcheck.fits(r)
            out.results.append(r)
    return out


def sample(results: Sequence[CompileResult]) -> list[CompileResult]:
    """The recorded results to compile again: per architecture and kernel function, the
    one with the most registers and the one with the most shared memory (the nearest to a
    limit), each distinct kernel once."""
    best: dict[tuple, tuple[CompileResult, tuple]] = {}
    for r in results:
        for what, size in (("regs", (r.registers, r.shared_bytes)),
                           ("shared", (r.shared_bytes, r.registers))):  # fmt: skip
            key = (r.spec.arch, _function(r.spec), what)
            if key not in best or size > best[key][1]:
                best[key] = (r, size)
    picked: dict[str, CompileResult] = {}
    for r, _ in best.values():
        picked.setdefault(configcheck.compile_id(r.spec), r)
    return list(picked.values())
