"""The stored tuning winners (``run/winners.py``): the winners file's round trip and merge,
which stored winners apply on this device and Triton, and where the cache lives."""

import json

import pytest
import torch
from altgrad_triton.kernels import tuning

from altgrad_triton import tune
from altgrad_triton.run import winners

pytestmark = pytest.mark.usefixtures("no_kernel_overrides")

HERE = tune.DeviceId("NVIDIA H100 80GB HBM3", (9, 0), "3.6.0")


def _entry(**over):
    meta = tuning.candidates("fo_pool_fwd", "sm_90")[0]  # HERE is an sm_90
    d = {
        "device": HERE.name,
        "capability": list(HERE.capability),
        "triton": HERE.triton,
        "kernel": "fo_pool_fwd",
        "key": ["bfloat16", 32768],
        "meta": meta,
    }
    d.update(over)
    return d


def test_winners_round_trip_and_merge(tmp_path):
    path = tmp_path / "winners.json"
    a = tune.Winner(
        HERE.name,
        HERE.capability,
        HERE.triton,
        "fo_pool_fwd",
        ("float32", 32768),
        {"BLOCK": 128, "num_warps": 1, "num_stages": 1},
        median_ms=0.5,
        shape="B=20 T=200 H=1550",
    )
    b = tune.Winner(
        HERE.name,
        HERE.capability,
        HERE.triton,
        "elementwise_fwd",
        ("float32", 131072, 64),
        {"BLOCK_N": 32, "num_warps": 4, "num_stages": 1},
    )
    tune.save_winners(path, [a, b])
    assert tune.load_winners(path) == sorted([a, b], key=lambda w: str(w.identity()))
    data = json.loads(path.read_text())
    assert data["format"] == tune.FORMAT
    e = next(e for e in data["entries"] if e["kernel"] == "fo_pool_fwd")
    assert e["key"] == ["float32", 32768] and e["dtype"] == "float32" and e["bucket"] == 32768
    assert e["capability"] == [9, 0] and e["triton"] == "3.6.0"
    # saving again replaces the same identity and keeps the rest
    a2 = tune.Winner(**{**a.__dict__, "meta": {"BLOCK": 256, "num_warps": 2, "num_stages": 1}})
    other = tune.Winner(**{**a.__dict__, "device": "NVIDIA A100-SXM4-80GB", "capability": (8, 0)})
    tune.save_winners(path, [a2, other])
    got = {w.identity(): w for w in tune.load_winners(path)}
    assert len(got) == 3
    assert got[a.identity()].meta == a2.meta
    assert got[b.identity()] == b and got[other.identity()] == other


def test_apply_stored_winners_only_for_this_device_and_triton(tmp_path, monkeypatch):
    cands = tuning.candidates("fo_pool_fwd", "sm_90")  # HERE's
    entries = [
        _entry(),  # applies
        _entry(key=["float32", 8192], meta=cands[1]),  # applies
        _entry(key=["float16", 1], device="NVIDIA A100-SXM4-80GB"),  # other GPU
        _entry(key=["float16", 2], capability=[8, 0]),  # other capability
        _entry(key=["float16", 4], triton="3.5.0"),  # other Triton
        _entry(key=["float16", 8], kernel="no_such_kernel"),  # not registered
        _entry(key=["float16", 16], meta={"BLOCK": 3, "num_warps": 1}),  # not a candidate
    ]
    (tmp_path / "winners.json").write_text(json.dumps({"format": tune.FORMAT, "entries": entries}))
    monkeypatch.setattr(winners, "present_device", lambda device=None: HERE)
    with pytest.warns(UserWarning, match="1 stored winner.*no longer candidates"):
        assert tune.apply_stored_winners(torch.device("cuda"), tmp_path) == 2
    assert tuning.get_override("fo_pool_fwd", ("bfloat16", 32768)) == cands[0]
    assert tuning.get_override("fo_pool_fwd", ("float32", 8192)) == cands[1]
    for n in (1, 2, 4, 8, 16):
        assert tuning.get_override("fo_pool_fwd", ("float16", n)) is None
    # the same file seen from another device or Triton version applies nothing
    tuning.clear_overrides()
    for there in (
        tune.DeviceId(HERE.name, (9, 0), "3.9.0"),
        tune.DeviceId("NVIDIA H200", (9, 0), HERE.triton),
    ):
        monkeypatch.setattr(winners, "present_device", lambda device=None, t=there: t)
        assert tune.apply_stored_winners("cuda", tmp_path) == 0
    assert tuning.get_override("fo_pool_fwd", ("bfloat16", 32768)) is None


def test_a_stored_winner_that_does_not_fit_this_gpu_is_ignored(tmp_path, monkeypatch):
    """A winner stored on one GPU model is applied only on the same name and capability;
    its config must also be a candidate for that capability's limits: an LSTM tile sized
    for 227 KB of shared memory (sm_90: 3 stages, 147,456 B) is not one on an sm_86 (99 KB)."""
    big = {"BLOCK_B": 16, "BLOCK_H": 32, "BLOCK_K": 128, "SPLIT_K": 2, "num_warps": 8,
           "num_stages": 3, "LAUNCH": 0}  # fmt: skip
    assert big in tuning.candidates("lstm_fwd", "sm_90")
    assert big not in tuning.candidates("lstm_fwd", "sm_86")
    for cap, applied in (((9, 0), 1), ((8, 6), 0)):
        here = tune.DeviceId("NVIDIA A-something", cap, HERE.triton)
        entry = _entry(device=here.name, capability=list(cap), kernel="lstm_fwd",
                       key=["float32", 32, 1664], meta=big)  # fmt: skip
        (tmp_path / "winners.json").write_text(
            json.dumps({"format": tune.FORMAT, "entries": [entry]})
        )
        monkeypatch.setattr(winners, "present_device", lambda device=None, h=here: h)
        if applied:
            assert tune.apply_stored_winners("cuda", tmp_path) == 1
        else:
            with pytest.warns(UserWarning, match="no longer candidates on sm_86"):
                assert tune.apply_stored_winners("cuda", tmp_path) == 0
        tuning.clear_overrides()


def test_apply_stored_winners_without_cuda_or_file_or_with_garbage(tmp_path, monkeypatch):
    if not torch.cuda.is_available():
        (tmp_path / "winners.json").write_text(
            json.dumps({"format": tune.FORMAT, "entries": [_entry()]})
        )
        assert tune.apply_stored_winners(torch.device("cuda"), tmp_path) == 0
    assert tune.apply_stored_winners(torch.device("cpu"), tmp_path) == 0
    monkeypatch.setattr(winners, "present_device", lambda device=None: HERE)
    assert tune.apply_stored_winners("cuda", tmp_path / "empty") == 0  # no file
    (tmp_path / "winners.json").write_text("{not json")
    with pytest.warns(UserWarning, match="not valid JSON"):
        assert tune.apply_stored_winners("cuda", tmp_path) == 0
    (tmp_path / "winners.json").write_text(json.dumps({"format": "v0", "entries": []}))
    with pytest.warns(UserWarning, match="format"):
        assert tune.apply_stored_winners("cuda", tmp_path) == 0


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(tune.CACHE_ENV, raising=False)
    assert tune.cache_dir() == tmp_path / "home" / ".cache" / "altgrad-triton" / "tune"
    monkeypatch.setenv(tune.CACHE_ENV, str(tmp_path / "env"))
    assert tune.cache_dir() == tmp_path / "env"
    assert tune.cache_dir(tmp_path / "opt") == tmp_path / "opt"
    assert tune.winners_path(tmp_path / "opt") == tmp_path / "opt" / "winners.json"
