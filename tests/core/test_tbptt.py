"""One TBPTT segment: the step both the trainer and the horizon experiment run."""

import torch
from torch import nn

from altgrad_triton.core.boundary import SyntheticBoundary
from altgrad_triton.core.cells import LSTM
from altgrad_triton.core.synthesizers import LinearSynthesizer
from altgrad_triton.core.tbptt import segment_step


def lstm_and_data():
    torch.manual_seed(0)
    cell, head = LSTM(3, 5, backend="torch"), nn.Linear(5, 1)
    params = [*cell.parameters(), *head.parameters()]
    x, y = torch.randn(4, 2, 3), torch.randn(4, 2, 1)

    def forward(state):
        h, final = cell(x, state)
        loss = (head(h) - y).pow(2).mean()
        return loss, final, loss.detach()

    return cell, params, forward


def test_a_plain_step_is_tbptt_with_a_clipped_update():
    cell, params, forward = lstm_and_data()
    state = tuple(torch.randn(2, 5) for _ in range(2))
    before = [p.detach().clone() for p in params]
    # the same step by hand
    loss, final, _ = forward(state)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 0.01)
    want = [b - 0.1 * p.grad for b, p in zip(before, params, strict=True)]
    for p, b in zip(params, before, strict=True):
        p.grad = None
        p.data.copy_(b)
    step = segment_step(forward, state, torch.optim.SGD(params, lr=0.1), clip=0.01)
    for p, w in zip(params, want, strict=True):
        torch.testing.assert_close(p.detach(), w)
    assert step.stats is None and step.output == loss.detach()
    assert all(not t.requires_grad for t in step.state)  # the next segment starts a new graph
    for a, b in zip(step.state, final, strict=True):
        torch.testing.assert_close(a, b.detach())


def test_a_step_with_a_boundary_fits_the_synthesizer():
    cell, params, forward = lstm_and_data()
    synth = LinearSynthesizer(10)
    boundary = SyntheticBoundary(synth, torch.optim.Adam(synth.parameters(), lr=0.1), 0.5)
    state = cell.init_state(2)
    for _ in range(2):
        step = segment_step(
            forward, state, torch.optim.SGD(params, lr=0.1), boundary=boundary, mode="synthetic"
        )
        state = step.state
    assert step.stats is not None and step.stats.norm_ratio > 0  # fitted: no longer zero
