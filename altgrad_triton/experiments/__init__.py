"""Experiments built from runs and probes: the copy-task horizon table (``horizon`` and its
probe, ``horizon_probe``) and the seed suite (``suite``)."""
