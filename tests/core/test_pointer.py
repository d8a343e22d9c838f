"""The cache pointer (``core/pointer.py``): Grave et al.'s formula step by step, and the
published settings."""

import pytest
import torch

from altgrad_triton.core.model import LMOutput
from altgrad_triton.core.pointer import PointerCache, PointerSettings, published_settings
from altgrad_triton.errors import UserError


def _pointer_reference(h, logits, targets, s: PointerSettings) -> torch.Tensor:
    """Grave et al.'s cache one step at a time, per column (a transcription of the formula,
    as AWD-LSTM's pointer.py loops it): h [N, B, H], logits [N, B, V], targets [N, B]."""
    n, b = targets.shape
    out = torch.empty(n, b, dtype=torch.float64)
    for col in range(b):
        for t in range(n):
            p = torch.softmax(logits[t, col].double(), -1)
            lo = max(0, t - s.window)
            if t > lo:
                att = torch.softmax(s.theta * (h[lo:t, col].double() @ h[t, col].double()), -1)
                cache = torch.zeros_like(p).index_add_(0, targets[lo:t, col], att)
                p = (1 - s.lam) * p + s.lam * cache
            out[t, col] = -torch.log(p[targets[t, col]])
    return out


@pytest.mark.parametrize("window", [1, 4, 100])
def test_pointer_cache_matches_the_step_by_step_formula(window):
    torch.manual_seed(3)
    n, b, hid, v = 23, 2, 5, 7
    h, logits = torch.randn(n, b, hid), torch.randn(n, b, v)
    targets = torch.randint(v, (n, b))
    s = PointerSettings(window=window, theta=0.7, lam=0.3)
    cache = PointerCache(s)
    got = [
        cache.token_nll(LMOutput(logits[a:z], h[a:z], h[a:z], ()), targets[a:z])
        for a, z in ((0, 6), (6, 7), (7, 23))  # ragged segments; the cache crosses them
    ]
    want = _pointer_reference(h, logits, targets, s)
    torch.testing.assert_close(torch.cat(got).double(), want, rtol=1e-5, atol=1e-6)


def test_published_pointer_settings_and_bad_ones():
    assert published_settings("ptb") == PointerSettings(500, 1.0, 0.1)
    assert published_settings("wikitext-2-small") == PointerSettings(3785, 0.662, 0.1279)
    for bad, match in (((0, 1.0, 0.1), "window: must be >= 1"), ((5, 1.0, 1.0), "lambda")):
        with pytest.raises(UserError, match=match):
            PointerSettings(*bad)
