"""Split-K LSTM segment kernels vs the PyTorch reference.

Every test runs the Triton path on the device the ``triton_device`` fixture gives: CPU
tensors under the interpreter (CI), CUDA tensors on a GPU machine (``TRITON_INTERPRET=0``;
fp32 ``tl.dot`` is then forced to IEEE, so the tolerances hold there too).

Forward (h_seq, h_T, c_T) and every gradient (gx, w_hh, h0, c0) with random upstream
gradients on all three outputs, fp32: forward atol/rtol 1e-5, gradients atol 1e-5 / rtol
1e-4 (sums over up to T*B = 15 terms). fp16 storage (fp32 compute): atol/rtol 1e-2 against
the fp32 reference on the same fp16-rounded inputs; bf16 storage likewise, atol/rtol 1e-2
forward and 2e-2 for the gradients (8 significant bits: h is rounded every step and read
back, the gate gradients are rounded before dW_hh's sum; measured worst 2e-3 and 6e-3). The
bf16 ``tl.dot`` runs right under the interpreter only with ``kernels/_interpreter.py``'s
patch (without it the outputs were off by 10 and dh0 by 1e11). Beyond the values: the
results are the same bits across two runs, across which program arrives last at a tile
(``slice_shift``), across launch modes, and across a reused workspace whose counters must be
back at zero.
"""

import warnings

import pytest
import torch
from altgrad_triton.kernels import tuning
from altgrad_triton.kernels._common import pdl_unavailable
from altgrad_triton.kernels.lstm import (
    LAUNCH_MODES,
    config_key,
    configs_lstm_bwd,
    configs_lstm_fwd,
    lstm_segment,
    lstm_segment_backward,
    lstm_segment_forward,
    lstm_segment_reference,
    lstm_workspace,
)
from altgrad_triton.kernels.lstm import launch as lstm_launch

TOL = {  # dtype -> (forward (atol, rtol), gradient (atol, rtol))
    torch.float32: ((1e-5, 1e-5), (1e-5, 1e-4)),
    torch.float16: ((1e-2, 1e-2), (1e-2, 1e-2)),
    # 8 significant bits: a rounding errs by up to 2**-8 relative, one that a GPU's other
    # fp32 summation order flips by up to 2**-7; h is rounded every step and fed back, the
    # gate gradients before dW_hh's sum (measured under the interpreter: 2e-3 and 6e-3)
    torch.bfloat16: ((1e-2, 1e-2), (2e-2, 2e-2)),
}

# Pairwise cover of H in {24, 40, 72} (ragged against BLOCK_H=32 and BLOCK_K=16), SPLIT_K
# in {1, 2, 3}, B in {1, 3} and T in {1, 5}: every H meets every split once, and each of
# them meets both values of B and of T; all four (B, T) pairs occur. (H=24 with SPLIT_K=3
# runs 2 forward slices of 16 and 3 backward slices of 32.)
CASES = [  # (B, T, H, SPLIT_K)
    (1, 1, 24, 1), (3, 5, 24, 2), (1, 5, 24, 3),
    (3, 5, 40, 1), (1, 5, 40, 2), (3, 1, 40, 3),
    (1, 5, 72, 1), (3, 1, 72, 2), (3, 5, 72, 3),
]  # fmt: skip


# bf16: every H and every split once, both values of B and of T, and the fp16 test's shape.
BF16_CASES = [(3, 5, 24, 2), (3, 1, 40, 3), (1, 5, 72, 1), (3, 3, 33, 2)]


def _meta(split: int, batch: int = 1) -> dict:
    block_b = 16 if batch <= 16 else 32
    return {"BLOCK_B": block_b, "BLOCK_H": 32, "BLOCK_K": 16, "SPLIT_K": split,
            "num_warps": 4, "num_stages": 2}  # fmt: skip


@pytest.fixture
def ieee_dot(monkeypatch):
    """IEEE fp32 ``tl.dot`` on a GPU too (TF32 would miss the fp32 tolerances)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # neither switch: IEEE


def forced(meta: dict, batch: int, hidden: int, dtype: torch.dtype):
    """Force ``meta`` for both directions through ``tuning`` (as altgrad-tune's winners)."""
    return tuning.overridden(config_key(batch, hidden, dtype), lstm_fwd=meta, lstm_bwd=meta)


def _ids(cases, dtype=torch.float32):
    name = str(dtype).removeprefix("torch.")
    return [f"B{b}-T{t}-H{h}-S{s}-{name}" for b, t, h, s in cases]


def _inputs(batch, steps, hidden, dtype=torch.float32):
    gx = torch.randn(steps, batch, 4 * hidden).to(dtype)
    w_hh = (torch.randn(4 * hidden, hidden) / hidden**0.5).to(dtype)
    h0 = torch.randn(batch, hidden).to(dtype)
    c0 = torch.randn(batch, hidden).to(dtype)
    return [x.requires_grad_() for x in (gx, w_hh, h0, c0)]


def _run(inputs, ups, **kw):
    """Outputs and gradients of the Triton path, with upstream gradients ``ups``."""
    out = lstm_segment(*inputs, backend="triton", **kw)
    grads = torch.autograd.grad(out, inputs, [u.to(o.dtype) for u, o in zip(ups, out, strict=True)])
    return [x.detach() for x in (*out, *grads)]


def _compare(batch, steps, hidden, dtype, **kw):
    inputs = _inputs(batch, steps, hidden, dtype)
    ref_inputs = [x.detach().float().requires_grad_() for x in inputs]
    ref = lstm_segment_reference(*ref_inputs)
    ups = [torch.randn_like(r) for r in ref]
    ref_grads = torch.autograd.grad(ref, ref_inputs, ups)
    got = _run(inputs, ups, **kw)
    (fa, fr), (ga, gr) = TOL[dtype]
    names = ("h_seq", "h_T", "c_T", "d_gx", "d_w_hh", "d_h0", "d_c0")
    for i, (name, g, r) in enumerate(zip(names, got, (*ref, *ref_grads), strict=True)):
        assert g.dtype == dtype, name
        atol, rtol = (fa, fr) if i < 3 else (ga, gr)
        torch.testing.assert_close(g.float(), r, atol=atol, rtol=rtol, msg=f"{name} differs")
    return inputs, ups, got


@pytest.fixture
def graph_runs(monkeypatch):
    """Records each graph-mode run: (steps after the first, steps per chunk). Patched in
    ``lstm.launch``, where ``_run_steps`` looks it up."""
    runs = []
    real = lstm_launch._run_graph

    def spy(stepper, device, start, rest, sign, noop, pdl, graph_steps):
        runs.append((rest, graph_steps))
        return real(stepper, device, start, rest, sign, noop, pdl, graph_steps)

    monkeypatch.setattr(lstm_launch, "_run_graph", spy)
    return runs


def _assert_same_bits(a, b, what):
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"{what}: tensor {i} differs"


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(("batch", "steps", "hidden", "split"), CASES, ids=_ids(CASES))
def test_forward_and_all_grads_fp32(batch, steps, hidden, split, triton_device, ieee_dot,
                                    nan_poison):  # fmt: skip
    with forced(_meta(split, batch), batch, hidden, torch.float32):
        _compare(batch, steps, hidden, torch.float32)


def test_forward_and_all_grads_fp16(triton_device, nan_poison):
    with forced(_meta(2), 3, 33, torch.float16):
        _compare(3, 3, 33, torch.float16)


@pytest.mark.parametrize(
    ("batch", "steps", "hidden", "split"), BF16_CASES, ids=_ids(BF16_CASES, torch.bfloat16)
)
def test_forward_and_all_grads_bf16(batch, steps, hidden, split, triton_device, nan_poison):
    with forced(_meta(split, batch), batch, hidden, torch.bfloat16):
        _compare(batch, steps, hidden, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_fp32_cell_state_with_half_storage(dtype, triton_device, nan_poison):
    """c0 in fp32 under fp16/bf16 storage (how the cells carry c): c_T and dc0 come back
    fp32, h and the other gradients in the storage dtype; both paths agree with the fp32
    reference."""
    gx, w_hh, h0, c0 = _inputs(3, 4, 33, dtype)
    c0 = c0.detach().float().requires_grad_()
    inputs = [gx, w_hh, h0, c0]
    ref_inputs = [x.detach().float().requires_grad_() for x in inputs]
    ref = lstm_segment_reference(*ref_inputs)
    ups = [torch.randn_like(r) for r in ref]
    ref_grads = torch.autograd.grad(ref, ref_inputs, ups)
    (fa, fr), (ga, gr) = TOL[dtype]
    for backend in ("triton", "torch"):
        out = lstm_segment(*inputs, backend=backend)
        assert [o.dtype for o in out] == [dtype, dtype, torch.float32], backend
        for name, o, r in zip(("h_seq", "h_T", "c_T"), out, ref, strict=True):
            torch.testing.assert_close(o.float(), r, atol=fa, rtol=fr, msg=f"{backend} {name}")
        grads = torch.autograd.grad(
            out, inputs, [u.to(o.dtype) for u, o in zip(ups, out, strict=True)]
        )
        assert [g.dtype for g in grads] == [dtype] * 3 + [torch.float32], backend
        for name, g, r in zip(("gx", "w_hh", "h0", "c0"), grads, ref_grads, strict=True):
            torch.testing.assert_close(g.float(), r, atol=ga, rtol=gr, msg=f"{backend} d{name}")


def test_unused_outputs_give_none_upstream(triton_device, ieee_dot, nan_poison):
    """Only h_T feeds the loss: dh_seq and dc_T arrive as None and count as zeros."""
    inputs = _inputs(3, 4, 5)
    _, h_t, _ = lstm_segment(*inputs, backend="triton")
    grads = torch.autograd.grad(h_t.square().sum(), inputs)
    ref_inputs = [x.detach().requires_grad_() for x in inputs]
    _, h_ref, _ = lstm_segment_reference(*ref_inputs)
    ref_grads = torch.autograd.grad(h_ref.square().sum(), ref_inputs)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_backward_launcher_all_upstream_none(triton_device, nan_poison):
    gx, w_hh, h0, c0 = (x.detach() for x in _inputs(3, 2, 5))
    h_all, c_all, act = lstm_segment_forward(gx, w_hh, h0, c0)
    dgates, dh0, dc0 = lstm_segment_backward(w_hh, h_all, c_all, act, None, None, None)
    assert dgates.shape == (2, 3, 20)
    for x in (dgates, dh0, dc0):
        assert torch.equal(x, torch.zeros_like(x))


def test_no_grad_path_matches(triton_device, ieee_dot, nan_poison):
    inputs = [x.detach() for x in _inputs(20, 3, 5)]
    out = lstm_segment(*inputs, backend="triton")
    ref = lstm_segment_reference(*inputs)
    for o, r in zip(out, ref, strict=True):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)


def test_reference_gradcheck_float64():
    inputs = [x.double().detach().requires_grad_() for x in _inputs(2, 3, 3)]
    assert torch.autograd.gradcheck(lstm_segment_reference, inputs)


# --------------------------------------------------------------------------- determinism


def _segment(inputs, ups, meta, **kw):
    """Forward and backward through the launchers directly (``kw`` to both)."""
    gx, w_hh, h0, c0 = (x.detach() for x in inputs)
    h_all, c_all, act = lstm_segment_forward(gx, w_hh, h0, c0, meta=meta, **kw)
    grads = lstm_segment_backward(w_hh, h_all, c_all, act, *ups, meta=meta, **kw)
    return [h_all, c_all, act, *grads]


def _segment_inputs(batch, steps, hidden):
    inputs = _inputs(batch, steps, hidden)
    ups = (
        torch.randn(steps, batch, hidden),
        torch.randn(batch, hidden),
        torch.randn(batch, hidden),
    )
    return inputs, ups


def test_two_runs_bitwise_equal(triton_device, nan_poison):
    inputs, ups = _segment_inputs(3, 4, 40)
    meta = _meta(3)
    _assert_same_bits(_segment(inputs, ups, meta), _segment(inputs, ups, meta), "second run")


def test_last_arriver_does_not_change_the_bits(triton_device, nan_poison):
    """``slice_shift`` s makes program p of a tile compute slice (p + s) % S, so a different
    slice's program draws the last ticket (under the interpreter: always the last program
    of the tile). The epilogue sums the slices in slice order from the workspace, so the
    bits must not change; an epilogue that added its own partial from registers, or summed
    in arrival order, would fail here."""
    inputs, ups = _segment_inputs(3, 3, 72)
    meta = _meta(3)  # 3 slices each way at H=72
    base = _segment(inputs, ups, meta)
    for shift in (1, 2):
        _assert_same_bits(base, _segment(inputs, ups, meta, slice_shift=shift), f"shift {shift}")


def test_counters_back_at_zero_and_workspace_reusable(triton_device, nan_poison):
    """Each tile's last arriver resets its counter: after a launch sequence every counter is
    zero, and a second segment on the same workspace gives the same bits (with a stale
    counter no program would draw the last ticket and the NaN-poisoned outputs would stay)."""
    batch, steps, hidden = 3, 3, 40
    inputs, ups = _segment_inputs(batch, steps, hidden)
    meta = _meta(3)
    gx, w_hh, h0, c0 = (x.detach() for x in inputs)
    ws_f = lstm_workspace("fwd", batch, hidden, gx.device, meta)
    ws_b = lstm_workspace("bwd", batch, hidden, gx.device, meta)
    runs = []
    for _ in range(2):
        fwd = lstm_segment_forward(gx, w_hh, h0, c0, meta=meta, workspace=ws_f)
        assert not ws_f.counters.any(), "forward counters not reset"
        bwd = lstm_segment_backward(w_hh, *fwd, *ups, meta=meta, workspace=ws_b)
        assert not ws_b.counters.any(), "backward counters not reset"
        runs.append([*fwd, *bwd])
    _assert_same_bits(runs[0], runs[1], "reused workspace")
    with pytest.raises(ValueError, match="workspace: too small"):
        lstm_segment_forward(
            gx, w_hh, h0, c0, meta=_meta(1),
            workspace=lstm_workspace("fwd", batch, 8, gx.device, _meta(1)),
        )  # fmt: skip


# --------------------------------------------------------------------------- launch modes


@pytest.mark.parametrize(
    ("steps", "graph_steps"), [(4, 2), (3, 2)], ids=["fwd-surplus", "bwd-surplus"]
)
def test_graph_mode_same_bits(steps, graph_steps, triton_device, nan_poison, graph_runs):
    """The graph modes read the step from a device integer and launch chunks of N steps
    (captured and replayed on a GPU, eager on a CPU); a chunk's surplus steps must be
    no-ops. T=4, N=2: the forward's 3 steps after the first run as 2 chunks of 2 (one
    surplus); T=3: the backward's 3 steps after the first (t = 1, 0, -1) likewise. The
    mode comes from the meta, as a tuned winner gives it."""
    inputs, ups = _segment_inputs(1, steps, 24)
    meta = _meta(2)
    plain = _segment(inputs, ups, meta)
    assert graph_runs == []
    graph = _segment(inputs, ups, dict(meta, LAUNCH=2, GRAPH_STEPS=graph_steps))
    assert graph_runs == [(steps - 1, graph_steps), (steps, graph_steps)]  # forward, backward
    _assert_same_bits(plain, graph, "graph mode")


def test_tuned_launch_mode_reaches_the_public_function(
    triton_device, ieee_dot, nan_poison, graph_runs
):
    """A stored winner's LAUNCH (here graph, 2 steps per chunk) drives ``lstm_segment``."""
    inputs = _inputs(3, 5, 24)
    ups = [torch.randn(5, 3, 24), torch.randn(3, 24), torch.randn(3, 24)]
    plain = _run(inputs, ups)
    with forced(dict(_meta(2), LAUNCH=2, GRAPH_STEPS=2), 3, 24, torch.float32):
        graph = _run(inputs, ups)
    assert graph_runs == [(4, 2), (5, 2)]
    with forced(_meta(2), 3, 24, torch.float32):
        forced_plain = _run(inputs, ups)
    assert len(graph_runs) == 2
    _assert_same_bits(forced_plain, graph, "tuned graph mode")
    for a, b in zip(plain, graph, strict=True):  # the heuristic config: other splits
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["pdl", "graph-pdl"])
def test_pdl_modes_same_bits_or_warned_fallback(mode, triton_device, nan_poison):
    """PDL runs where it exists (Hopper, a Triton with launch_pdl); elsewhere, as under the
    interpreter, the mode warns once and runs without PDL. Either way: the same bits."""
    inputs, ups = _segment_inputs(1, 3, 24)
    meta = _meta(2)
    plain = _segment(inputs, ups, meta, launch="plain")
    why = pdl_unavailable(inputs[0].device)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = _segment(inputs, ups, meta, launch=mode)
    fallbacks = [w for w in seen if "lstm_segment: launch=" in str(w.message)]
    if why is None:
        assert not fallbacks
    else:
        assert fallbacks and why in str(fallbacks[0].message)
    _assert_same_bits(plain, got, mode)


def test_launch_mode_errors(triton_device):
    args = [x.detach() for x in _inputs(1, 1, 4)]
    with pytest.raises(ValueError, match=r"launch must be one of .*'plain'.*got 'fast'"):
        lstm_segment(*args, backend="triton", launch="fast")
    with pytest.raises(ValueError, match=r"LAUNCH must index .* got 7"):
        lstm_segment_forward(*args, meta=dict(_meta(1), LAUNCH=7))
    with pytest.raises(ValueError, match="GRAPH_STEPS must be an int >= 1, got 0"):
        lstm_segment_forward(*args, meta=dict(_meta(1), LAUNCH=2, GRAPH_STEPS=0))


# --------------------------------------------------------------------------- configs


def test_config_spaces_registered():
    """Each direction's candidates: every tile in every launch mode (altgrad-tune times
    whole segments, so it chooses them together)."""
    for name, gen in (("lstm_fwd", configs_lstm_fwd), ("lstm_bwd", configs_lstm_bwd)):
        metas = gen()
        assert tuning.candidates(name) == metas
        for c in metas:
            assert min(c["BLOCK_B"], c["BLOCK_H"], c["BLOCK_K"]) >= 16
            assert max(c["BLOCK_H"], c["BLOCK_K"]) <= 128 and c["SPLIT_K"] >= 1
        assert {LAUNCH_MODES[m["LAUNCH"]] for m in metas} == set(LAUNCH_MODES)
        tiles = {tuple(m[k] for k in ("BLOCK_B", "BLOCK_H", "BLOCK_K", "SPLIT_K")) for m in metas}
        assert len(metas) == len(tiles) * len(LAUNCH_MODES)


def test_keys_separate_the_tuned_shapes():
    """altgrad-tune sweeps H in {400, 650, 1150, 1550} x B in {20, 80} x {bf16, fp32}: each
    gets its own key (a B*H bucket would merge H=1150 with 1550, and B=80 H=400 with both)."""
    keys = {
        config_key(b, h, d)
        for b in (20, 80)
        for h in (400, 650, 1150, 1550)
        for d in (torch.bfloat16, torch.float32)
    }
    assert len(keys) == 16


def test_meta_validation(triton_device):
    gx, w_hh, h0, c0 = (x.detach() for x in _inputs(3, 2, 33))
    meta = _meta(2)
    for bad, match in (
        (dict(meta, BLOCK_H=24), "BLOCK_H must be a power of two"),
        (dict(meta, BLOCK_K=256), "BLOCK_K must be a power of two in"),
        (dict(meta, SPLIT_K=0), "SPLIT_K must be an int >= 1"),
        (dict(meta, BLOCK_Q=16), "unknown"),
        ({k: v for k, v in meta.items() if k != "SPLIT_K"}, "missing"),
    ):
        with pytest.raises(ValueError, match=match):
            lstm_segment_forward(gx, w_hh, h0, c0, meta=bad)


def test_tuning_override_is_used(triton_device, ieee_dot, nan_poison):
    """A forced choice in ``tuning`` wins over the heuristic config: a bad one raises, a
    good one (one slice forward, three backward) runs and matches the reference."""
    gx, w_hh, h0, c0 = (x.detach().requires_grad_() for x in _inputs(3, 2, 33))
    key = config_key(3, 33, torch.float32)
    try:
        tuning.set_override("lstm_fwd", key, dict(_meta(1), BLOCK_H=24))
        with pytest.raises(ValueError, match="BLOCK_H"):
            lstm_segment(gx, w_hh, h0, c0, backend="triton")
        tuning.set_override("lstm_fwd", key, dict(_meta(1), BLOCK_H=64, BLOCK_K=64))
        tuning.set_override("lstm_bwd", key, dict(_meta(3), BLOCK_H=16))
        out = lstm_segment(gx, w_hh, h0, c0, backend="triton")
        grads = torch.autograd.grad(out[0].sum(), (gx, w_hh, h0, c0))
    finally:
        tuning.clear_overrides("lstm_fwd")
        tuning.clear_overrides("lstm_bwd")
    ref_in = [x.detach().requires_grad_() for x in (gx, w_hh, h0, c0)]
    ref = lstm_segment_reference(*ref_in)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, torch.autograd.grad(ref[0].sum(), ref_in), strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- input errors


def _valid():
    return [x.detach() for x in _inputs(3, 2, 5)]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a: a.__setitem__(0, a[0][0]), "gx must be"),
        (lambda a: a.__setitem__(0, a[0][:0]), "gx must be"),
        (lambda a: a.__setitem__(0, a[0][..., :-1]), "gx's last dim"),
        (lambda a: a.__setitem__(1, a[1][:-1]), "w_hh must be"),
        (lambda a: a.__setitem__(2, a[2][:, :-1]), "h0 must have shape"),
        (lambda a: a.__setitem__(3, a[3][:-1]), "c0 must have shape"),
        (lambda a: a.__setitem__(3, a[3].double()), "c0 has dtype torch.float64; allowed"),
        (lambda a: a.__setitem__(2, a[2].half()), "h0 has dtype torch.float16, must match gx's"),
        (lambda a: a.__setitem__(0, a[0].int()), "gx has dtype torch.int32; allowed"),
        (lambda a: a.__setitem__(0, a[0].transpose(0, 1).contiguous().transpose(0, 1)),
         "gx must be contiguous"),
    ],
    ids=["gx-2d", "gx-T0", "gx-gates", "w_hh-shape", "h0-shape", "c0-shape", "c0-float64",
         "h0-dtype-mismatch", "gx-int", "gx-noncontiguous"],
)  # fmt: skip
def test_value_errors(mutate, match, triton_device):
    args = _valid()
    mutate(args)
    with pytest.raises(ValueError, match=match):
        lstm_segment(*args, backend="triton")


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        lstm_segment(*_valid(), backend="cuda")
