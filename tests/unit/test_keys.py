"""The entity-key encoding shared by engine state, Redis keys and Parquet partitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamfs.keys import decode_key, encode_key, normalize_key

parts = st.one_of(st.text(alphabet="ab%|{}7 é", max_size=6), st.integers(-5, 5))


def test_examples() -> None:
    assert encode_key(("c1",)) == "c1"
    assert encode_key((7,)) == "7"
    assert encode_key(("u1", 7)) == "u1|7"
    assert encode_key(("a}b{",)) == "a%7Db%7B"
    assert encode_key(("50%|x",)) == "50%25%7Cx"
    assert encode_key(("a}b{", "x|y")) == "a%7Db%7B|x%7Cy"


@given(st.lists(parts, min_size=1, max_size=3))
def test_keys_round_trip_as_text_and_never_hold_a_brace_or_an_unescaped_bar(key: list[object]) -> None:
    text = encode_key(tuple(key))
    assert decode_key(text) == tuple(str(part) for part in key)
    assert "{" not in text and "}" not in text
    assert text.count("|") == len(key) - 1


def test_normalize_key_accepts_scalars_tuples_and_lists() -> None:
    assert normalize_key("c1", 1) == ("c1",)
    assert normalize_key(["u1", 7], 2) == ("u1", 7)
    with pytest.raises(ValueError, match="1 parts, the entity has 2 join keys"):
        normalize_key(("u1",), 2)
