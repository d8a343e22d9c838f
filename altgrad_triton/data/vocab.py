"""The token <-> id table, built from a corpus' train split and stored in checkpoints.

Ids follow the order in which tokens first appear in the train split, the convention of
the PyTorch word-language-model example and AWD-LSTM: the same text always gives the same
ids, so a checkpoint's vocabulary can be compared with a freshly built one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from altgrad_triton.errors import UserError

EOS = "<eos>"
"""Appended to every line at word level, so the model learns where lines end."""

UNK = "<unk>"
"""Stands for a word outside the vocabulary (WikiText and PTB already contain it)."""


class Vocabulary:
    """An ordered list of distinct tokens (``itos``) and its inverse (``stoi``).

    Immutable by convention once built: the model's embedding and decoder rows are
    indexed by it, so it travels with the weights (see :meth:`to_dict`).
    """

    __slots__ = ("itos", "stoi")

    def __init__(self, itos: Iterable[str]) -> None:
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {}
        for i, token in enumerate(self.itos):
            if not isinstance(token, str):
                raise TypeError(f"vocabulary tokens must be str, got {type(token).__name__}")
            if token in self.stoi:
                raise ValueError(f"token {token!r} appears twice in the vocabulary")
            self.stoi[token] = i

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    __hash__ = None  # type: ignore[assignment]  # mutable containers inside

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.itos[:5])
        more = ", ..." if len(self.itos) > 5 else ""
        return f"Vocabulary({len(self.itos)} tokens: [{head}{more}])"

    @property
    def unk_index(self) -> int | None:
        """Id of ``<unk>``, or None when the vocabulary has no such token."""
        return self.stoi.get(UNK)

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """Map tokens to a 1-D LongTensor of ids; unknown tokens become ``<unk>``.

        Raises UserError for an unknown token when the vocabulary has no ``<unk>``,
        because there is then no id that would not silently mean another word.
        """
        stoi, unk = self.stoi, self.unk_index
        if unk is not None:
            ids = [stoi.get(t, unk) for t in tokens]
        else:
            ids = []
            for t in tokens:
                i = stoi.get(t)
                if i is None:
                    raise UserError(
                        f"token {t!r} is not in the vocabulary ({len(self)} tokens, no {UNK}): "
                        "use only tokens the model was trained on"
                    )
                ids.append(i)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Map ids back to tokens (for samples and error reports)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return [self.itos[i] for i in ids]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, so a checkpoint's sidecar can carry the vocabulary."""
        return {"format": 1, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`; a malformed entry is the checkpoint's fault (UserError)."""
        itos = data.get("itos") if isinstance(data, Mapping) else None
        if not isinstance(itos, Sequence) or isinstance(itos, str):
            raise UserError(
                "vocabulary: expected a mapping with an 'itos' list of tokens; "
                "the checkpoint's sidecar is damaged or not from altgrad-triton"
            )
        try:
            return cls(itos)
        except (TypeError, ValueError) as e:
            raise UserError(
                f"vocabulary: {e}; the checkpoint's sidecar is damaged or not from altgrad-triton"
            ) from None
