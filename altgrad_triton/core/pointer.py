"""The continuous cache pointer (Grave et al. 2016), applied at evaluation as AWD-LSTM does.

A trained model's last-layer outputs h_i are a memory of the text read so far: each one was
followed by the word x_{i+1}. At step t the cache attends over the last ``window`` of them,
softmax(theta * h_t . h_i), and puts that attention on the words that followed; the
prediction is ``(1 - lambda) * p_model + lambda * p_cache``. Nothing is trained: the model
is the trained one, the cache is its own recent past, and the three numbers are tuned on
validation. Words that repeat within the window (names, topics) gain the most.

Only the probability of each target is needed for perplexity, so the cache never builds a
distribution over the vocabulary: p_cache(target) is the attention on the window positions
whose next word is the target. The mixture is taken in log space, so ``lambda = 0`` gives the
model's own log-probabilities exactly. Each batch column has its own cache (a column is one
contiguous stream); the cache uses what it holds from the first step on (AWD's pointer.py
waits until it holds a full window, which changes only the first ``window`` tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from .model import LMOutput


@dataclass(frozen=True)
class PointerSettings:
    """The cache's three numbers: how many past steps it holds, how sharp its attention is,
    and its weight in the mixture."""

    window: int
    theta: float
    lam: float

    def __post_init__(self) -> None:
        if self.window < 1:
            raise UserError(f"pointer window: must be >= 1, got {self.window}")
        if not (math.isfinite(self.theta) and self.theta >= 0):
            raise UserError(f"pointer theta: must be a finite number >= 0, got {self.theta}")
        if not 0 <= self.lam < 1:
            raise UserError(f"pointer lambda: must be >= 0 and < 1, got {self.lam}")


AWD_PUBLISHED = {
    "ptb": PointerSettings(window=500, theta=1.0, lam=0.1),
    "wikitext-2": PointerSettings(window=3785, theta=0.662, lam=0.1279),
}
"""The settings AWD-LSTM's README gives for its LSTM models (``pointer.py --window --theta
--lambdasm``); its pointer.py defaults carry more digits for WikiText-2 (0.6625523, 0.1278592)."""


def published_settings(corpus: str) -> PointerSettings:
    """AWD's settings for a corpus: Penn Treebank's for ``ptb``, WikiText-2's for the rest."""
    return AWD_PUBLISHED["ptb" if corpus == "ptb" else "wikitext-2"]


class PointerCache:
    """The cache of one evaluation pass: ``reset`` before it, then ``token_nll`` per segment,
    in order (it keeps the last ``window`` outputs and next words of every column)."""

    def __init__(self, settings: PointerSettings):
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        self.keys: torch.Tensor | None = None  # [<= window, B, H] last-layer outputs
        self.words: torch.Tensor | None = None  # [<= window, B] the word after each

    def token_nll(self, out: LMOutput, targets: torch.Tensor) -> torch.Tensor:
        """Negative log-probability [T, B] of each target under the model mixed with the cache.

        ``out``: the model's output for a segment (``last_raw`` [T, B, H] is the cache's
        key and query); ``targets`` [T, B]. The segment's own steps join the cache as they go.
        """
        with torch.autocast(out.logits.device.type, enabled=False):  # fp32 scores under bf16
            return self._token_nll(out, targets)

    def _token_nll(self, out: LMOutput, targets: torch.Tensor) -> torch.Tensor:
        s = self.settings
        logp = F.log_softmax(out.logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1))
        logp = logp.squeeze(-1)  # [T, B]
        h = out.last_raw.float()
        held = 0 if self.keys is None else self.keys.shape[0]
        keys = h if self.keys is None else torch.cat([self.keys, h])  # [L, B, H]
        words = targets if self.words is None else torch.cat([self.words, targets])
        visible = _window_mask(held, h.shape[0], keys.shape[0], s.window, h.device)  # [T, L]
        scores = torch.einsum("tbh,lbh->btl", h, keys) * s.theta
        attention = scores.masked_fill(~visible, -math.inf).softmax(-1).nan_to_num(0.0)
        follows = words.t().unsqueeze(1) == targets.t().unsqueeze(2)  # [B, T, L]
        p_cache = (attention * follows).sum(-1).t()  # [T, B]
        mixed = torch.logaddexp(math.log1p(-s.lam) + logp, _log(s.lam) + torch.log(p_cache))
        has_cache = visible.any(-1).unsqueeze(-1)  # [T, 1]: the very first step has none
        self.keys, self.words = keys[-s.window :], words[-s.window :]
        return -torch.where(has_cache, mixed, logp)


def _window_mask(held: int, steps: int, total: int, window: int, device) -> torch.Tensor:
    """[steps, total]: step t (position held + t) sees positions [held + t - window, held + t)."""
    query = torch.arange(held, held + steps, device=device).unsqueeze(1)
    key = torch.arange(total, device=device).unsqueeze(0)
    return (key < query) & (key >= query - window)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf
