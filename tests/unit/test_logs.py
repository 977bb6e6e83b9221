"""Worker logs are JSON lines whatever the message holds."""

from __future__ import annotations

import json
import logging
import sys

from streamfs.logs import JsonLogFormatter


def record(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    logger = logging.getLogger("streamfs.test")
    info = None
    if exc_info:
        try:
            raise ValueError('bad "value"\nsecond line')
        except ValueError:
            info = sys.exc_info()
    return logger.makeRecord("streamfs.test", logging.WARNING, __file__, 1, message, args, info)


def test_quotes_backslashes_and_newlines_stay_one_valid_line() -> None:
    line = JsonLogFormatter().format(record('key %r said "%s"\\', "c1", 'a "quoted"\nvalue'))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == 'key \'c1\' said "a "quoted"\nvalue"\\'
    assert entry["level"] == "WARNING" and entry["logger"] == "streamfs.test"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]


def test_a_traceback_is_a_field_of_the_same_line() -> None:
    line = JsonLogFormatter().format(record("checkpoint failed", exc_info=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "checkpoint failed"
    assert entry["exception"].startswith("Traceback") and 'ValueError: bad "value"' in entry["exception"]
