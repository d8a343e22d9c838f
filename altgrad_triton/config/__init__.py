"""Configuration: a recipe (TOML -> frozen dataclasses, validated, with one-line errors,
overrides, ``extends`` and legacy keys), the packaged recipe catalogue, and the one rule per
decision that several wings ask (backend per device, character-level or not). Imports nothing
of the package but the floor (``errors``, ``files``) and the kernels' ``interpreting``."""
