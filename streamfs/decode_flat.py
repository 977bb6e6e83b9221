"""A compiled scanner for the common shape of a JSON message: one flat object of plain values.

decode_batch.BatchDecoder reads a batch with Arrow's JSON reader (2026-12-07, Ice Lake VM:
0.82 µs per payment) and checks its datetimes with a regex and a cast (0.26 µs more). Most
messages are far simpler than JSON allows: ASCII, no escapes, numbers that are short decimals,
datetimes in one strict form. This scans such a batch in one compiled pass, with no Python
object per message, into the columns Arrow's read and cast give.

It only ever takes what it decodes exactly as Arrow does, and otherwise gives up on the whole
batch (None): a byte outside printable ASCII, an escape, a nested value, a number with more
than 18 significant digits or a decimal exponent beyond ±22, a float where an int belongs, an
unknown field when the schema forbids extras, a field given twice, a datetime not in the
regex's form or not a real date. BatchDecoder then reads that batch with Arrow, which decides
as before. So this never refuses or rejects a record: it is a faster way to the same table,
and tests/unit/test_decode_flat.py holds it to Arrow's columns on random and hostile batches.

Floats are exact by Clinger's fast path: a decimal m·10^e with m < 2^53 and |e| ≤ 22 is one
correctly rounded IEEE multiplication or division of two exactly represented doubles, so it
equals what any correct parser (Arrow's, orjson's) gives.
"""

from __future__ import annotations

from datetime import datetime

import numba
import numpy as np
import pyarrow as pa

from streamfs.offline import layout

STRING, INT, FLOAT, BOOL, DATETIME = range(5)
_KINDS = {str: STRING, int: INT, float: FLOAT, bool: BOOL, datetime: DATETIME}
MISSING, NULL, VALUE = 0, 1, 2
"""What a message gave a field (state array): absent, JSON null, a value."""

_QUOTE, _BACKSLASH, _COMMA, _COLON = 34, 92, 44, 58
_OPEN, _CLOSE, _NEWLINE, _SPACE, _TAB = 123, 125, 10, 32, 9
_MINUS, _PLUS, _DOT, _ZERO, _NINE = 45, 43, 46, 48, 57
_MAX_DIGITS = 18  # significant digits that always fit an int64 (and m < 2^53 is checked apart)
_POWERS = np.array([10.0**k for k in range(23)], np.float64)  # all exact in binary64


@numba.njit(cache=True, inline="always")
def _skip_space(data: np.ndarray, i: int, end: int) -> int:
    while i < end and (data[i] == _SPACE or data[i] == _TAB):
        i += 1
    return i


@numba.njit(cache=True, inline="always")
def _string_end(data: np.ndarray, i: int, end: int) -> int:
    """The index of the closing quote of a string whose content starts at i, or -1 if the
    string has an escape, a control byte, a non-ASCII byte or no end."""
    while i < end:
        b = data[i]
        if b == _QUOTE:
            return i
        if b == _BACKSLASH or b < 32 or b >= 128:
            return -1
        i += 1
    return -1


@numba.njit(cache=True, inline="always")
def _number(data: np.ndarray, i: int, end: int) -> tuple[int, bool, bool, int, int]:
    """A JSON number at i: (its end or -1 if malformed or too long, negative, integral (no
    fraction or exponent), significand m, decimal exponent e) with value ±m·10^e."""
    negative = False
    if i < end and data[i] == _MINUS:
        negative = True
        i += 1
    if i >= end or not (_ZERO <= data[i] <= _NINE):
        return -1, False, False, 0, 0
    m = 0
    digits = 0  # significant digits in m
    exponent = 0
    if data[i] == _ZERO:
        i += 1
        if i < end and _ZERO <= data[i] <= _NINE:
            return -1, False, False, 0, 0  # a leading zero
    else:
        while i < end and _ZERO <= data[i] <= _NINE:
            m = m * 10 + (data[i] - _ZERO)
            digits += 1
            if digits > _MAX_DIGITS:
                return -1, False, False, 0, 0
            i += 1
    integral = True
    if i < end and data[i] == _DOT:
        integral = False
        i += 1
        if i >= end or not (_ZERO <= data[i] <= _NINE):
            return -1, False, False, 0, 0
        while i < end and _ZERO <= data[i] <= _NINE:
            m = m * 10 + (data[i] - _ZERO)
            if m:
                digits += 1
                if digits > _MAX_DIGITS:
                    return -1, False, False, 0, 0
            exponent -= 1
            i += 1
    if i < end and (data[i] == 101 or data[i] == 69):  # e, E
        integral = False
        i += 1
        sign = 1
        if i < end and (data[i] == _PLUS or data[i] == _MINUS):
            sign = -1 if data[i] == _MINUS else 1
            i += 1
        if i >= end or not (_ZERO <= data[i] <= _NINE):
            return -1, False, False, 0, 0
        written = 0
        while i < end and _ZERO <= data[i] <= _NINE:
            written = written * 10 + (data[i] - _ZERO)
            if written > 9999:
                return -1, False, False, 0, 0
            i += 1
        exponent += sign * written
    return i, negative, integral, m, exponent


@numba.njit(cache=True, inline="always")
def _literal(data: np.ndarray, i: int, end: int, word: np.ndarray) -> bool:
    if i + len(word) > end:
        return False
    for k in range(len(word)):  # noqa: SIM110 (compiled: a loop, not a generator)
        if data[i + k] != word[k]:
            return False
    return True


@numba.njit(cache=True, inline="always")
def _digits(data: np.ndarray, i: int, count: int) -> int:
    """The decimal number of `count` digits at i, or -1 if any is not a digit."""
    value = 0
    for k in range(count):
        b = data[i + k]
        if not (_ZERO <= b <= _NINE):
            return -1
        value = value * 10 + (b - _ZERO)
    return value


@numba.njit(cache=True, inline="always")
def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if month <= 2:
        year -= 1
    era = year // 400
    yoe = year - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@numba.njit(cache=True, inline="always")
def _utc_micros(data: np.ndarray, i: int, end: int) -> tuple[bool, int]:
    """A datetime string's content data[i:end] as UTC µs since the epoch, if it has the form
    YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}](Z|+00:00) and is a real date and time of years 1-9999
    (anything else, e.g. a 60th second, is left to Arrow: False)."""
    if end - i < 20:
        return False, 0
    year = _digits(data, i, 4)
    month = _digits(data, i + 5, 2)
    day = _digits(data, i + 8, 2)
    hour = _digits(data, i + 11, 2)
    minute = _digits(data, i + 14, 2)
    second = _digits(data, i + 17, 2)
    if (
        data[i + 4] != _MINUS
        or data[i + 7] != _MINUS
        or (data[i + 10] != 84 and data[i + 10] != _SPACE)  # T or space
        or data[i + 13] != _COLON
        or data[i + 16] != _COLON
        or year < 1
        or month < 1
        or month > 12
        or day < 1
        or hour < 0
        or hour > 23
        or minute < 0
        or minute > 59
        or second < 0
        or second > 59
    ):
        return False, 0
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = 29 if month == 2 and leap else (28 if month == 2 else (30 if month in (4, 6, 9, 11) else 31))
    if day > month_days:
        return False, 0
    k = i + 19
    micros = 0
    if k < end and data[k] == _DOT:
        k += 1
        count = 0
        while k < end and _ZERO <= data[k] <= _NINE:
            if count == 6:
                return False, 0
            micros = micros * 10 + (data[k] - _ZERO)
            count += 1
            k += 1
        if count == 0:
            return False, 0
        for _ in range(6 - count):
            micros *= 10
    if end - k == 1:
        if data[k] != 90:  # Z
            return False, 0
    elif end - k == 6:
        if not (
            data[k] == _PLUS
            and data[k + 1] == _ZERO
            and data[k + 2] == _ZERO
            and data[k + 3] == _COLON
            and data[k + 4] == _ZERO
            and data[k + 5] == _ZERO
        ):
            return False, 0
    else:
        return False, 0
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    return True, seconds * 1_000_000 + micros


@numba.njit(cache=True, inline="always")
def _field(data: np.ndarray, i: int, end: int, names: np.ndarray, name_offsets: np.ndarray) -> int:
    """The index of the field named data[i:end], or -1."""
    length = end - i
    for f in range(len(name_offsets) - 1):
        at = name_offsets[f]
        if name_offsets[f + 1] - at != length:
            continue
        same = True
        for k in range(length):
            if names[at + k] != data[i + k]:
                same = False
                break
        if same:
            return f
    return -1


@numba.njit(cache=True)
def scan(  # type: ignore[no-untyped-def]
    data,
    count,
    names,
    name_offsets,
    kinds,
    forbid_extra,
    limit,
    state,
    ints,
    floats,
    starts,
    ends,
):
    """Scan `count` newline-separated flat JSON objects of at most `limit` bytes each in data
    (uint8; an empty or blank message is not an object: given up on). Per field f and message
    r: state[f, r] (MISSING, NULL, VALUE) and the value in ints (int, bool, datetime µs), floats,
    or starts/ends (a string's bytes). Returns -1 when every message was taken, else the first
    message it gave up on (the batch is then Arrow's)."""
    true_word = np.array([116, 114, 117, 101], np.uint8)
    false_word = np.array([102, 97, 108, 115, 101], np.uint8)
    null_word = np.array([110, 117, 108, 108], np.uint8)
    size = len(data)
    i = 0
    end = size  # (no token crosses a newline: strings end at control bytes, the rest at non-digits)
    for r in range(count):
        line = i
        i = _skip_space(data, i, end)
        if i >= end or data[i] != _OPEN:
            return r
        i = _skip_space(data, i + 1, end)
        if i < end and data[i] == _CLOSE:
            i += 1
        else:
            while True:
                if i >= end or data[i] != _QUOTE:
                    return r
                close = _string_end(data, i + 1, end)
                if close < 0:
                    return r
                f = _field(data, i + 1, close, names, name_offsets)
                if f < 0 and forbid_extra:
                    return r
                if f >= 0 and state[f, r] != MISSING:
                    return r  # a field given twice
                i = _skip_space(data, close + 1, end)
                if i >= end or data[i] != _COLON:
                    return r
                i = _skip_space(data, i + 1, end)
                if i >= end:
                    return r
                b = data[i]
                kind = kinds[f] if f >= 0 else -1
                if b == 110:  # n
                    if not _literal(data, i, end, null_word):
                        return r
                    i += 4
                    if f >= 0:
                        state[f, r] = NULL
                elif b == 116 or b == 102:  # t, f
                    word = true_word if b == 116 else false_word
                    if not _literal(data, i, end, word) or (f >= 0 and kind != BOOL):
                        return r
                    i += len(word)
                    if f >= 0:
                        state[f, r] = VALUE
                        ints[f, r] = 1 if b == 116 else 0
                elif b == _QUOTE:
                    close = _string_end(data, i + 1, end)
                    if close < 0:
                        return r
                    if kind == STRING:
                        starts[f, r] = i + 1
                        ends[f, r] = close
                        state[f, r] = VALUE
                    elif kind == DATETIME:
                        ok, micros = _utc_micros(data, i + 1, close)
                        if not ok:
                            return r
                        ints[f, r] = micros
                        state[f, r] = VALUE
                    elif f >= 0:
                        return r
                    i = close + 1
                elif b == _MINUS or _ZERO <= b <= _NINE:
                    after, negative, integral, m, exponent = _number(data, i, end)
                    if after < 0:
                        return r
                    if kind == INT:
                        if not integral:
                            return r
                        ints[f, r] = -m if negative else m
                        state[f, r] = VALUE
                    elif kind == FLOAT:
                        if m == 0:
                            value = 0.0
                        elif m <= (1 << 53) and -22 <= exponent <= 22:
                            value = (
                                float(m) * _POWERS[exponent]
                                if exponent >= 0
                                else float(m) / _POWERS[-exponent]
                            )
                        else:
                            return r
                        floats[f, r] = -value if negative else value
                        state[f, r] = VALUE
                    elif f >= 0:
                        return r
                    i = after
                else:
                    return r  # a nested value, or not JSON
                i = _skip_space(data, i, end)
                if i < end and data[i] == _COMMA:
                    i = _skip_space(data, i + 1, end)
                    continue
                if i < end and data[i] == _CLOSE:
                    i += 1
                    break
                return r
        i = _skip_space(data, i, end)
        if i - line > limit:
            return r  # oversized (the batch's checks then say so)
        if r == count - 1:
            return -1 if i == size else r  # (more after the last object: another line, or not JSON)
        if i >= size or data[i] != _NEWLINE:
            return r  # more after the object, or fewer lines than messages
        i += 1
    return -1


@numba.njit(cache=True, inline="always")
def _gather(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, offsets: np.ndarray, out: np.ndarray
) -> None:
    """Copy string r's bytes data[starts[r]:ends[r]] to out at offsets[r]."""
    for r in range(len(starts)):
        at = offsets[r]
        for k in range(starts[r], ends[r]):
            out[at] = data[k]
            at += 1


class FlatScanner:
    """Scans batches of one schema's messages (plain fields: decode_batch.plain_fields) to
    columns, or gives up on a batch."""

    def __init__(self, fields: dict[str, type], forbid_extra: bool) -> None:
        self.names = list(fields)
        self.kinds = np.array([_KINDS[kind] for kind in fields.values()], np.int64)
        encoded = [name.encode() for name in self.names]
        self._usable = all(name.isascii() and '"' not in name and "\\" not in name for name in self.names)
        self._names = np.frombuffer(b"".join(encoded), np.uint8) if encoded else np.zeros(0, np.uint8)
        self._name_offsets = np.cumsum([0, *map(len, encoded)]).astype(np.int64)
        self.forbid_extra = forbid_extra

    def scan(self, joined: bytes, count: int, limit: int) -> dict[str, pa.Array] | None:
        """The columns of `count` newline-joined messages (datetimes as UTC µs timestamps), or
        None if the batch is not all of the simple shape this takes or has a message of over
        `limit` bytes."""
        if not self._usable or count == 0:
            return None
        fields = len(self.names)
        data = np.frombuffer(joined, np.uint8)
        state = np.zeros((fields, count), np.uint8)
        ints = np.zeros((fields, count), np.int64)
        floats = np.zeros((fields, count), np.float64)
        starts = np.zeros((fields, count), np.int64)
        ends = np.zeros((fields, count), np.int64)
        gave_up = scan(
            data, count, self._names, self._name_offsets, self.kinds, self.forbid_extra, limit,
            state, ints, floats, starts, ends,
        )  # fmt: skip
        if gave_up >= 0:
            return None
        columns: dict[str, pa.Array] = {}
        # (each column gets its own copy: a view would keep the whole batch's ints or floats alive,
        # every field's, for as long as the offline writer buffers the table)
        for f, name in enumerate(self.names):
            present = state[f] == VALUE
            validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
            kind = self.kinds[f]
            if kind == STRING:
                lengths = np.where(present, ends[f] - starts[f], 0)
                offsets = np.zeros(count + 1, np.int64)
                np.cumsum(lengths, out=offsets[1:])
                if offsets[-1] >= 1 << 31:
                    return None
                out = np.empty(int(offsets[-1]), np.uint8)
                _gather(data, starts[f], np.where(present, ends[f], starts[f]), offsets, out)
                buffers = [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(out)]
                columns[name] = pa.Array.from_buffers(pa.string(), count, buffers)
            elif kind == FLOAT:
                columns[name] = pa.Array.from_buffers(
                    pa.float64(), count, [validity, pa.py_buffer(floats[f].copy())]
                )
            elif kind == BOOL:
                bits = pa.py_buffer(np.packbits(ints[f].astype(np.bool_), bitorder="little"))
                columns[name] = pa.Array.from_buffers(pa.bool_(), count, [validity, bits])
            else:
                arrow_type = pa.int64() if kind == INT else layout.VALUE_TIMESTAMP
                columns[name] = pa.Array.from_buffers(
                    arrow_type, count, [validity, pa.py_buffer(ints[f].copy())]
                )
        return columns
