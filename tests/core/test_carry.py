"""What crosses a segment boundary (``core/carry.py``): a model's state joined per batch row,
its dtype promoted to at least fp32, and a synthesizer's carry mapped whatever its shape."""

from __future__ import annotations

import pytest
import torch

from altgrad_triton.core.carry import batch_rows, detach, join_state, map_carry, to_device


def test_the_joined_state_is_every_tensor_flattened_per_row_in_order():
    h, c, x = torch.randn(3, 4), torch.randn(3, 2, 5), torch.randn(3, 1)
    joined = join_state((h, c, x))
    assert joined.shape == (3, 4 + 10 + 1)
    for row in range(3):
        want = torch.cat([h[row], c[row].flatten(), x[row]])
        assert torch.equal(joined[row], want)


def test_a_state_with_the_batch_on_dim_1_is_joined_per_batch_entry():
    """torch.nn.LSTM's (h, c): [layers, batch, hidden]."""
    h, c = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    joined = join_state((h, c), batch_dim=1)
    assert joined.shape == (3, 20)
    assert torch.equal(joined[1], torch.cat([h[:, 1].flatten(), c[:, 1].flatten()]))
    assert torch.equal(batch_rows(h, 1), h.permute(1, 0, 2).reshape(3, 10))
    assert torch.equal(batch_rows(h, -2), batch_rows(h, 1))


@pytest.mark.parametrize(
    "dtypes, want",
    [
        ((torch.bfloat16, torch.bfloat16), torch.float32),  # a bf16 state joins in fp32
        ((torch.bfloat16, torch.float32), torch.float32),
        ((torch.float32, torch.float64), torch.float64),  # float64 stays so (the probe)
    ],
)
def test_the_joined_state_is_at_least_fp32(dtypes, want):
    state = tuple(torch.randn(2, 3).to(d) for d in dtypes)
    joined = join_state(state)
    assert joined.dtype == want
    assert torch.equal(joined[:, :3], state[0].to(want))  # widened exactly


def test_a_carry_is_mapped_as_a_tensor_a_tuple_or_nothing():
    assert map_carry(lambda t: t * 2, None) is None
    assert torch.equal(map_carry(lambda t: t * 2, torch.ones(2)), torch.full((2,), 2.0))
    h, c = map_carry(lambda t: t + 1, (torch.zeros(1), torch.ones(1)))
    assert (h.item(), c.item()) == (1.0, 2.0)


def test_detach_cuts_the_graph_and_to_device_moves_every_tensor():
    w = torch.ones(2, requires_grad=True)
    carry = (w * 2, w * 3)
    cut = detach(carry)
    assert all(not t.requires_grad and t.grad_fn is None for t in cut)
    assert all(torch.equal(a, b) for a, b in zip(cut, carry, strict=True))
    assert detach(None) is None
    moved = to_device((torch.zeros(1), torch.zeros(2)), "meta")
    assert [t.device.type for t in moved] == ["meta", "meta"]
