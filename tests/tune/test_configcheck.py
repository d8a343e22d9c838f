"""The compile-config check's pools (``tune/configcheck.py``). The config-fit check itself is
tests/tune/test_fitrecord.py's."""

import os

import pytest

pytestmark = pytest.mark.usefixtures("no_kernel_overrides")


def test_compiles_use_the_cores_this_process_may_use(monkeypatch):
    """The compile pools (--check-configs, the sweep's warm-up) size themselves by the
    process's affinity mask (a container's or taskset's share), not the machine's cores."""
    from altgrad_triton.tune import configcheck

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert configcheck.usable_cores() == 2
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert configcheck.usable_cores() == 64
