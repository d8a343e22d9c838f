"""The fused LM head (kernels/linear_ce.py): loss and every gradient of the Triton path
(interpreter or GPU) and of the chunked PyTorch reference against the unfused oracle
``F.cross_entropy(F.linear(h, W, b).float(), t)``, over ragged N, V, D, tied and untied
weights, one and several chunks; out-of-range targets refused; the model's training step
with the fused head equal to the unfused one."""

import pytest
import torch
import torch.nn.functional as F
from altgrad_triton.kernels import linear_ce as mod
from altgrad_triton.kernels import linear_cross_entropy, linear_cross_entropy_reference

from altgrad_triton.core.model import LMOutput, RNNLanguageModel, lm_loss

# (N, V, D, chunk_rows): ragged sizes; chunk_rows None is one chunk at these sizes
SHAPES = [(1, 7, 3, None), (13, 37, 5, None), (33, 100, 17, 8), (40, 257, 24, 16)]
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2)}


def oracle(h, w, b, t):
    """The unfused head, as the model computed it before: full logits, fp32 cross-entropy."""
    return F.cross_entropy(F.linear(h, w, b).float(), t)


def loss_and_grads(fn, h, w, b, t, upstream, **kw):
    loss = fn(h, w, b, t, **kw)
    inputs = [x for x in (h, w, b) if x is not None]
    return loss, torch.autograd.grad(loss, inputs, upstream)


def inputs(n, vocab, d, dtype=torch.float32, bias=True):
    h = torch.randn(n, d).to(dtype).requires_grad_()
    w = (torch.randn(vocab, d) / d**0.5).to(dtype).requires_grad_()
    b = (torch.randn(vocab) * 0.1).to(dtype).requires_grad_() if bias else None
    return h, w, b, torch.randint(0, vocab, (n,))


def check_all(got, want, dtype):
    atol, rtol = TOL[dtype]
    (loss, grads), (loss_ref, grads_ref) = got, want
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss, loss_ref.float(), atol=atol, rtol=rtol, msg="loss")
    for name, g, r in zip(("dh", "dW", "db"), grads, grads_ref, strict=False):
        assert g.dtype == r.dtype, name
        torch.testing.assert_close(g.float(), r.float(), atol=atol, rtol=rtol, msg=name)


def shape_id(s):
    return f"N{s[0]}-V{s[1]}-D{s[2]}-chunk{s[3]}"


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_triton_path_matches_unfused(shape, bias, nan_poison, triton_device):
    n, vocab, d, chunk = shape
    h, w, b, t = inputs(n, vocab, d, bias=bias)
    up = torch.randn(())
    got = loss_and_grads(linear_cross_entropy, h, w, b, t, up, backend="triton", chunk_rows=chunk)
    check_all(got, loss_and_grads(oracle, h, w, b, t, up), torch.float32)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_chunked_reference_matches_unfused(shape):
    n, vocab, d, chunk = shape
    h, w, b, t = inputs(n, vocab, d)
    up = torch.randn(())
    chunk = chunk or 4
    got = loss_and_grads(linear_cross_entropy, h, w, b, t, up, backend="torch", chunk_rows=chunk)
    check_all(got, loss_and_grads(oracle, h, w, b, t, up), torch.float32)


def test_bf16_reference_and_row_step(triton_device):
    """bf16 storage: the kernel's row step (no tl.dot, so the interpreter runs it right)
    and the chunked reference against the unfused head in bf16 with fp32 loss."""
    h, w, b, t = inputs(24, 300, 16, torch.bfloat16)
    up = torch.ones(())
    want = loss_and_grads(oracle, h, w, b, t, up)
    for backend in ("triton", "torch"):
        got = loss_and_grads(linear_cross_entropy, h, w, b, t, up, backend=backend, chunk_rows=7)
        check_all(got, want, torch.bfloat16)


def test_row_kernel_writes_loss_and_gradient_in_place(nan_poison, triton_device):
    """One launch of the row kernel against the PyTorch row step, V spanning 3 tiles."""
    z = torch.randn(5, 9000) * 3
    t = torch.tensor([0, 8999, 4096, 17, 4095])
    want_z, want_loss = z.clone(), torch.empty(5)
    mod.ce_rows_torch(want_z, t, want_loss, 0.25, True)
    loss = torch.empty(5)
    mod.ce_rows_triton(z, t, loss, 0.25, True)
    torch.testing.assert_close(loss, want_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z, want_z, atol=1e-6, rtol=1e-5)


def test_row_kernel_gives_nan_for_a_target_out_of_range(triton_device):
    """Behind the public check, the kernel itself never ignores a bad target."""
    z, loss = torch.randn(2, 10), torch.empty(2)
    mod.ce_rows_triton(z, torch.tensor([3, 10]), loss, 1.0, False)
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1])


def test_tied_weight_gradient_adds_into_the_embedding(triton_device):
    """A tied decoder's dW joins the embedding's own gradient in the shared parameter."""
    emb = torch.nn.Embedding(50, 8)
    words, t = torch.randint(0, 50, (12,)), torch.randint(0, 50, (12,))
    grads = []
    for backend in ("triton", None):
        emb.weight.grad = None
        h = torch.tanh(emb(words))
        if backend is None:
            loss = oracle(h, emb.weight, None, t)
        else:
            loss = linear_cross_entropy(h, emb.weight, None, t, backend=backend, chunk_rows=5)
        loss.backward()
        grads.append(emb.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bad", [-1, 37, -100])
def test_out_of_range_targets_are_an_error(backend, bad, triton_device):
    h, w, b, t = inputs(6, 37, 4)
    t[3] = bad
    msg = rf"targets\[3\] = {bad} is outside the vocabulary \[0, 37\)"
    with pytest.raises(ValueError, match=msg):
        linear_cross_entropy(h, w, b, t, backend=backend)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h, w, b, t: (h[None], w, b, t), "hidden must be a non-empty"),
        (lambda h, w, b, t: (h, w[:, :3], b, t), r"weight must be \[V, 4\]"),
        (lambda h, w, b, t: (h, w.double(), b, t), "weight has dtype torch.float64"),
        (lambda h, w, b, t: (h, w, b[:5], t), r"bias must have shape \(37,\)"),
        (lambda h, w, b, t: (h, w, b, t.float()), "targets must be an int64 or int32"),
        (lambda h, w, b, t: (h, w, b, t[:2]), r"targets must be \[6\]"),
    ],
)
def test_bad_inputs_name_the_input(change, message):
    args = change(*inputs(6, 37, 4))
    with pytest.raises(ValueError, match=message):
        linear_cross_entropy(*args)


def test_reference_with_one_chunk_is_the_unfused_head_bit_for_bit():
    h, w, b, t = inputs(30, 64, 8)
    assert torch.equal(linear_cross_entropy_reference(h, w, b, t), oracle(h, w, b, t))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_training_step_with_fused_head_equals_unfused(backend, tied, triton_device):
    """One SGD step of the language model: the loss through the fused head (several
    chunks) against the same model's full logits and F.cross_entropy."""
    after = []
    for fused in (True, False):
        torch.manual_seed(1)
        model = RNNLanguageModel(
            40, cell="qrnn", emb_size=8, hidden_size=12, layers=2, tie_weights=tied,
            backend=backend if fused else "torch", head_chunk_rows=7 if fused else None,
        )  # fmt: skip
        tokens, targets = torch.randint(0, 40, (5, 3)), torch.randint(0, 40, (5, 3))
        out = model(tokens, model.init_state(3))
        if fused:
            loss, _ = lm_loss(out, targets, ar_alpha=1.0)
        else:
            ce = F.cross_entropy(out.logits.reshape(-1, 40).float(), targets.reshape(-1))
            loss = ce + out.last_dropped.float().pow(2).mean()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
        after.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_output_logits_are_computed_on_demand():
    """Training never builds the logits; the pointer cache and sampling still get them."""
    model = RNNLanguageModel(30, cell="lstm", emb_size=6, hidden_size=6, layers=1)
    out = model(torch.randint(0, 30, (4, 2)), model.init_state(2))
    assert isinstance(out, LMOutput) and out.logits.shape == (4, 2, 30)
    torch.testing.assert_close(out.logits, model.decoder(out.last_dropped))
