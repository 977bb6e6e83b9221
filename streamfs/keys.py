"""The one entity-key encoding shared by engine state, Redis keys and Parquet partitions.

An entity key is a tuple of join-key values, one per join key of the entity. Its text form
is each value's text, with '%', '|', '{' and '}' percent-escaped, joined by '|'. Escaping keeps
composite keys unambiguous and keeps Redis Cluster hash-tag braces out of user data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_ESCAPES = {"%": "%25", "|": "%7C", "{": "%7B", "}": "%7D"}


def _escape(text: str) -> str:
    for raw, escaped in _ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def _unescape(text: str) -> str:
    for raw, escaped in reversed(_ESCAPES.items()):
        text = text.replace(escaped, raw)
    return text


def encode_key(values: Sequence[Any]) -> str:
    """('c1',) -> 'c1'; ('u1', 7) -> 'u1|7'."""
    if len(values) == 1:  # the common case, once per key per Redis write and read: no generator
        text = str(values[0])
        if "%" in text or "|" in text or "{" in text or "}" in text:
            return _escape(text)
        return text
    return "|".join(_escape(str(value)) for value in values)


def decode_key(text: str) -> tuple[str, ...]:
    """The inverse of encode_key, with every part as text."""
    return tuple(_unescape(part) for part in text.split("|"))


def normalize_key(key: Any, arity: int) -> tuple[Any, ...]:
    """Accept 'c1', ('c1',), ['u1', 7] or {'user_id': 'u1', ...}-free scalars and return a tuple."""
    if isinstance(key, tuple):
        parts = key
    elif isinstance(key, list):
        parts = tuple(key)
    else:
        parts = (key,)
    if len(parts) != arity:
        raise ValueError(f"entity key {key!r} has {len(parts)} parts, the entity has {arity} join keys")
    return parts
