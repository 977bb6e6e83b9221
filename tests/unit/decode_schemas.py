"""The event schema the batch decoder's tests share: test_decode_batch holds BatchDecoder to the
per-message path with it, test_decode_flat holds the compiled scanner to Arrow's columns."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Pay(BaseModel):
    card: str
    amount: float
    n: int
    ok: bool
    note: str | None = None
    at: datetime | None = None
    ts: datetime
