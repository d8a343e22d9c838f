"""The vocabulary (``data/vocab.py``): a JSON round trip, and encoding that names what it
does not know in one line."""

from __future__ import annotations

import json

import pytest

from altgrad_triton.data import UNK, Vocabulary
from altgrad_triton.errors import UserError


def assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_vocabulary_json_round_trip_and_encode():
    v = Vocabulary(["x", UNK, "y"])
    again = Vocabulary.from_dict(json.loads(json.dumps(v.to_dict())))
    assert again == v and len(again) == 3
    assert v.encode(["y", "zzz", "x"]).tolist() == [2, 1, 0]
    with pytest.raises(UserError) as e:
        Vocabulary(["x"]).encode(["x", "nope"])
    assert "'nope'" in assert_one_line(e)
    with pytest.raises(UserError):
        Vocabulary.from_dict({"itos": ["a", "a"]})
    with pytest.raises(UserError):
        Vocabulary.from_dict({"tokens": []})
