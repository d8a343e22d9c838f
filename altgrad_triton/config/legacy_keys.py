"""Recipes and checkpoints written before the synthesizer keys were renamed still load.

Until then a synthesizer was picked with three keys (``synthetic.synthesizer =
"elementwise"``, ``synthetic.elementwise = "toolkit" | "authors"`` and ``synthetic.preset =
"authors"``) and the authors' own settings sat in ``[synthetic]``. Now one key picks it
(``synthetic.synthesizer = "toolkit" | "authors" | "mlp" | "linear"``), and the authors'
settings are the ``[synthetic.authors]`` table. Old recipe files, overrides such as
``synthetic.preset=authors``, and the ``recipe.toml`` / ``meta.json`` of old run folders are
rewritten here to the new keys, the same run, with a one-line note giving the new spelling.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError

AUTHORS_ONLY = ("sequence", "window", "zoneout")
"""The keys that moved into ``[synthetic.authors]``."""

_OLD_DEFAULTS = {"sequence": "element", "window": 1, "zoneout": 0.0}
"""What those keys were when a recipe left them unset and named no preset."""

_OLD_KEYS = ("preset", "elementwise", *AUTHORS_ONLY)


def migrate(data: dict) -> tuple[dict, list[str]]:
    """``data`` with the old synthesizer keys rewritten to the new ones, and the notes."""
    synthetic = data.get("synthetic")
    if not isinstance(synthetic, dict):
        return data, []
    old = {k: synthetic[k] for k in _OLD_KEYS if k in synthetic}
    if not old and synthetic.get("synthesizer") != "elementwise":
        return data, []
    if "synthesizer" in synthetic:
        old = {"synthesizer": synthetic["synthesizer"], **old}
    kind = _kind(old)
    new: dict[str, Any] = {k: v for k, v in synthetic.items() if k not in old}
    new["synthesizer"] = kind
    authors = dict(new.get("authors", {})) if isinstance(new.get("authors"), dict) else {}
    for key in AUTHORS_ONLY:
        if kind == "authors":
            value = old.get(key, None if old.get("preset") == "authors" else _OLD_DEFAULTS[key])
            if value is not None:
                authors.setdefault(key, value)
        elif key in old and old[key] != _OLD_DEFAULTS[key]:
            raise UserError(
                f"synthetic.{key}: only the authors' synthesizer reads it, got {old[key]!r} "
                f"with synthetic.synthesizer = {kind!r}; it is now synthetic.authors.{key}, "
                "with synthetic.synthesizer = 'authors'"
            )
    if kind == "authors" and old.get("preset") != "authors":
        authors.setdefault("defaults", False)  # the authors' synthesizer, the toolkit's values
    if authors:
        new["authors"] = authors
    return {**data, "synthetic": new}, [_note(old, kind, authors)]


def _kind(old: dict[str, Any]) -> str:
    """The new ``synthetic.synthesizer`` for the old keys ``old``."""
    preset, chosen = old.get("preset", "none"), old.get("synthesizer", "elementwise")
    if preset not in ("none", "authors"):
        raise UserError(
            f"synthetic.preset: must be one of 'none', 'authors', got {preset!r} (the key is "
            "now synthetic.synthesizer = 'authors')"
        )
    elementwise = old.get("elementwise", "authors" if preset == "authors" else "toolkit")
    if elementwise not in ("toolkit", "authors"):
        raise UserError(
            f"synthetic.elementwise: must be one of 'toolkit', 'authors', got {elementwise!r} "
            "(the key is now synthetic.synthesizer = 'toolkit' | 'authors')"
        )
    if preset == "authors" and (chosen in ("mlp", "linear") or elementwise == "toolkit"):
        other = chosen if chosen in ("mlp", "linear") else "toolkit"
        raise UserError(
            f"synthetic.preset = 'authors' with the {other} synthesizer: the authors' values "
            "now come with synthetic.synthesizer = 'authors' only; set the keys you want "
            "from them yourself"
        )
    if preset == "authors":
        return "authors"
    return elementwise if chosen in ("elementwise", "toolkit") else chosen


def _note(old: dict[str, Any], kind: str, authors: dict[str, Any]) -> str:
    was = ", ".join(f"synthetic.{k} = {v!r}" for k, v in old.items())
    now = [f"synthetic.synthesizer = {kind!r}"]
    now += [f"synthetic.authors.{k} = {v!r}" for k, v in authors.items()]
    return f"note: {was} is now spelled {', '.join(now)}"


def migrate_shape(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``model_shape`` (``meta.json``) in the new keys: an old one recorded
    ``synthetic.elementwise`` and ``synthetic.window`` for every synthesizer."""
    if "synthetic.elementwise" not in saved:
        return saved
    shape = dict(saved)
    elementwise = shape.pop("synthetic.elementwise")
    window = shape.pop("synthetic.window", None)
    if shape.get("synthetic.synthesizer") == "elementwise":
        shape["synthetic.synthesizer"] = elementwise
    if shape.get("synthetic.synthesizer") == "authors" and window is not None:
        shape["synthetic.authors.window"] = window
    return shape
