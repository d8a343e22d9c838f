"""Reading run directories: one ``Run`` per folder, each counted once, and the unit a corpus
is reported in.

A run directory is what ``altgrad-train`` leaves: ``metrics.jsonl`` (one line per epoch),
``results.json`` once finished (best validation and test loss), ``recipe.toml``, and the
truncation probe's records when there are any: ``probe.jsonl`` (``[probe] every = N``) and
``probe-train.json`` (``altgrad-probe RUN_DIR``). A run named
``<name>-s<seed>`` is one seed of the recipe ``<name>`` (``split_seed``).
"""

from __future__ import annotations

import json
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..config.names import char_level, split_seed
from ..errors import UserError
from ..files import read_json, read_jsonl
from ..run.folder import RunFolder
from ..run.metrics import bits, perplexity

PROBE_KEYS = ("horizons", "mean")
"""What a probe record (``probe_run.probe_record``) must hold for the report to read it."""


@dataclass
class Run:
    """One run directory, read."""

    path: Path
    name: str
    group: str
    seed: int | None
    corpus: str
    epochs: list[dict]
    results: dict | None
    probes: list[dict] = field(default_factory=list)  # probe.jsonl: [probe] every = N
    probe: dict | None = None  # probe-train.json: altgrad-probe on its checkpoint

    @property
    def char_level(self) -> bool:
        return char_level(self.corpus)

    @property
    def finished(self) -> bool:
        return self.results is not None

    def best_val_loss(self) -> float | None:
        if self.results is not None:
            return self.results["best_val_loss"]
        losses = [e["val_loss"] for e in self.epochs if e.get("val_loss") is not None]
        return min(losses) if losses else None

    def test_loss(self) -> float | None:
        return None if self.results is None else self.results.get("test_loss")

    def mean_sg_cos(self) -> float | None:
        """Mean sg_cos over the epochs that fitted a synthesizer (None for plain BPTT)."""
        cos = [e["sg_cos"] for e in self.epochs if e.get("sg_cos") is not None]
        return statistics.fmean(cos) if cos else None

    def seconds(self) -> float:
        if self.results is not None and "seconds" in self.results:
            return self.results["seconds"]
        return sum(e.get("seconds", 0.0) for e in self.epochs)


def metric(loss: float | None, char_level: bool) -> float | None:
    """A mean cross-entropy (nats) as perplexity, or bits per character for char level."""
    if loss is None:
        return None
    return bits(loss) if char_level else perplexity(loss)


def unit_of(chars: bool) -> tuple[str, int]:
    """The unit a corpus is reported in (``chars``: character-level), and its decimals."""
    return ("bpc", 3) if chars else ("ppl", 2)


def read_run(path: Path) -> Run:
    """Read one run directory (metrics.jsonl required; results.json, recipe.toml optional);
    a file that cannot be read or holds no numbers where they belong is one UserError
    naming it."""
    path = Path(path)
    folder = RunFolder(path)
    metrics = folder.metrics
    if not metrics.exists():
        raise UserError(f"{path}: not a run directory (no {folder.METRICS})")
    recipe = _recipe_of(path)
    corpus = recipe.get("data", {}).get("corpus", "")
    name = recipe.get("run", {}).get("name", "") or path.name
    results = None
    try:
        if folder.results.exists():
            results = read_json(folder.results, required=("best_val_loss",))
            _numbers([results], ("best_val_loss", "test_loss", "seconds"), folder.results)
        epochs = read_jsonl(metrics, required=("epoch",))
        probes = read_jsonl(folder.epoch_probes, missing_ok=True, required=PROBE_KEYS)
        probe = None
        if folder.probe("train").exists():
            probe = read_json(folder.probe("train"), required=PROBE_KEYS)
    except OSError as e:
        raise UserError(f"{e.filename or path}: cannot read ({e.strerror or e})") from None
    if not epochs and metrics.read_text(encoding="utf-8", errors="replace").strip():
        raise UserError(f"{metrics}: holds no complete JSON line (its only line is not JSON)")
    _numbers(epochs, ("val_loss", "sg_cos", "seconds"), metrics)
    group, seed = split_seed(name)
    return Run(path, name, group, seed, corpus, epochs, results, probes, probe)


def _recipe_of(path: Path) -> dict:
    """The run's recipe.toml as a dict; empty if it is missing or damaged (the folder name
    then stands in for the run's name)."""
    try:
        r = tomllib.loads(RunFolder(path).recipe.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}
    run, data = r.get("run", {}), r.get("data", {})
    ok = isinstance(run, dict) and isinstance(data, dict)
    return r if ok and isinstance(run.get("name", ""), str) else {}


def _numbers(rows: list[dict], keys: tuple[str, ...], where: Path) -> None:
    """A UserError naming ``where`` if one of ``keys`` holds something other than a number
    (or null): a table cannot average it."""
    for row in rows:
        for key in keys:
            v = row.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise UserError(f"{where}: {key} must be a number, got {v!r}")


FINGERPRINT_IGNORES = ("out_dir", "threads", "log_every", "kernel_check")
"""run keys that do not change what a run computes: a run copied or trained again into
another folder is the same seed (and the kernel check changes no number: the run's record
says which kernels it used)."""


def fingerprint(path: Path) -> str | None:
    """What makes two run folders the same run: their recipe, less the keys of
    FINGERPRINT_IGNORES; None without a readable recipe.toml."""
    recipe = _recipe_of(path)
    if not recipe:
        return None
    run = {k: v for k, v in recipe.get("run", {}).items() if k not in FINGERPRINT_IGNORES}
    return json.dumps({**recipe, "run": run}, sort_keys=True, default=str)


def run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories named, or found one or two levels below the folders named."""
    dirs: list[Path] = []
    for p in (Path(x).expanduser() for x in paths):
        if not p.exists():
            raise UserError(f"{p}: no such file or directory")
        if RunFolder(p).metrics.exists():
            dirs.append(p)
            continue
        name = RunFolder.METRICS
        found = sorted({m.parent for m in [*p.glob(f"*/{name}"), *p.glob(f"*/*/{name}")]})
        if not found:
            raise UserError(f"{p}: holds no run directories (no {name} inside)")
        dirs += found
    return dirs


def find_runs(paths: list[str | Path], notes: list[str] | None = None) -> list[Run]:
    """The runs of ``run_dirs(paths)``, each once: a folder named twice, or a copy of a run
    (the same recipe.toml, see ``fingerprint``), is one seed, not two. With ``notes``, each
    duplicate dropped and each broken run left out is a line there (the other runs are
    still read), and so is a run whose recipe.toml cannot be read (named by its folder); without,
    a broken run is a UserError. A UserError if no run is readable."""
    runs: list[Run] = []
    broken: list[UserError] = []
    seen: dict[object, Path] = {}
    for d in run_dirs(paths):
        keys = [d.resolve(), fingerprint(d)]
        first = next((seen[k] for k in keys if k in seen), None)
        if first is not None:
            if notes is not None:
                notes.append(
                    f"{d} is the same run as {first} (same folder or recipe): counted once"
                )
            continue
        try:
            run = read_run(d)
        except UserError as e:
            if notes is None:
                raise
            broken.append(e)
            continue
        seen.update((k, d) for k in keys if k is not None)
        runs.append(run)
        recipe = RunFolder(d).recipe
        if notes is not None and keys[1] is None and recipe.exists():
            notes.append(
                f"{recipe}: not a readable recipe; the run is named by its folder, its "
                "corpus unknown"
            )
    if broken and not runs:
        more = f" (and {len(broken) - 1} more broken runs)" if len(broken) > 1 else ""
        raise UserError(f"{broken[0]}{more}")
    if notes is not None:
        notes += [f"left out a broken run: {e}" for e in broken]
    return runs
