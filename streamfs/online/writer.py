"""The write side of the online store: serving states of changed keys into Redis.

The worker writes each view's changed keys (`ViewEngine.take_dirty_by_partition`, through
worker/online_sync.py) before it commits Kafka offsets. Each key's whole serving state is
written with SET (never a read-modify-write), so a replay after a crash rewrites the same bytes
(bar the write time) and changes nothing a reader sees. Redis errors (ConnectionError,
TimeoutError) propagate: the worker pauses, retries the write, and commits only once it
succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from streamfs.engine import Key, ViewEngine
from streamfs.keys import encode_key
from streamfs.online.layout import NAMESPACE, ViewMeta, encode_entries, key_prefix, key_suffix, views_key

DEFAULT_CHUNK = 1_000


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, UTC (the write time stored in every entry)."""
    return time.time_ns() // 1_000_000


class OnlineWriter:
    """Writes the serving states of a pipeline's views to Redis, pipelined in chunks.

    Nothing is buffered: `write` has sent everything when it returns, so `flush` is a no-op kept
    for the sink protocol. View metadata (``<ns>:views``) is written on the first write, not in
    the constructor, so building a writer needs no Redis.
    """

    def __init__(
        self,
        client: redis.Redis,
        engines: Sequence[ViewEngine],
        *,
        namespace: str = NAMESPACE,
        chunk_size: int = DEFAULT_CHUNK,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.client = client
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.clock = clock
        self._metas = {engine.name: ViewMeta.from_engine(engine) for engine in engines}
        self._registered = False

    def register(self) -> None:
        """Store every view's metadata in ``<ns>:views`` (idempotent)."""
        mapping = {name: meta.to_bytes() for name, meta in self._metas.items()}
        if mapping:
            self.client.hset(views_key(self.namespace), mapping=mapping)  # type: ignore[arg-type]
        self._registered = True

    def write(self, engine: ViewEngine, keys: Iterable[Key]) -> int:
        """SET the serving state of each key (with PX when the view has a ttl); return how many.

        Keys the engine no longer holds (their partition was revoked) are skipped: their new
        owner writes them.
        """
        meta = self._metas.get(engine.name)
        if meta is None:
            known = sorted(self._metas)
            raise ValueError(f"view {engine.name!r} was not given to this OnlineWriter (views: {known})")
        if not self._registered:
            self.register()
        prefix = key_prefix(self.namespace, meta.entity)
        suffix = key_suffix(meta.name)
        fingerprint = meta.fingerprint
        expire = meta.expire_ms
        written = self.clock()
        count = 0
        keys = list(keys)
        for begin in range(0, len(keys), self.chunk_size):
            chunk = keys[begin : begin + self.chunk_size]
            entries = encode_entries(engine.serving_columns(chunk), fingerprint, written)
            names = [
                prefix + encode_key(key) + suffix for key, entry in zip(chunk, entries, strict=True) if entry
            ]
            values = [entry for entry in entries if entry]
            self._set_all(names, values, expire)
            count += len(names)
        return count

    def _set_all(self, names: list[str], values: list[bytes], expire: int | None) -> None:
        """SET names[i] to values[i] (PX expire), pipelined, replies checked.

        On a plain redis.Redis the commands are packed here and sent on one pooled connection:
        redis-py's pipeline spent ~5 µs per SET building, packing and parsing it (more than
        the entry's JSON), this ~2 µs. Other clients (a RedisCluster routes by slot) use
        their pipeline.
        """
        if not names:
            return
        client = self.client
        if not isinstance(client, redis.Redis):
            pipe = client.pipeline(transaction=False)
            for name, value in zip(names, values, strict=True):
                pipe.set(name, value, px=expire)
            pipe.execute()
            return
        if expire is None:
            head, tail = b"*3\r\n$3\r\nSET\r\n", b""
        else:
            px = str(expire).encode()
            head, tail = b"*5\r\n$3\r\nSET\r\n", b"$2\r\nPX\r\n$%d\r\n%b\r\n" % (len(px), px)
        commands = []
        for name, value in zip(names, values, strict=True):
            raw = name.encode()
            commands.append(
                b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (head, len(raw), raw, len(value), value, tail)
            )
        pool = client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([b"".join(commands)])  # type: ignore[no-untyped-call]
            _read_oks(connection, len(commands))
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]  # (replies may be left unread)
            raise
        finally:
            pool.release(connection)

    def flush(self) -> None:
        """Nothing to do: `write` sends everything before it returns."""


def _read_oks(connection: Any, count: int) -> None:
    """Read `count` replies that must each be OK.

    redis-py's `read_response` costs ~1.5 µs of Python per reply here, as much as packing the
    SET; with its hiredis parser the replies are taken straight from its reader instead (the
    parser's `_reader` and `read_from_socket`: internals, so any other parser, or a redis-py
    without them, reads reply by reply). The reader hands back an error reply as an exception
    object, and anything but a reply (False, or redis-py's not-enough-data marker) when it
    needs more bytes."""
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    read_more = getattr(parser, "read_from_socket", None)
    if reader is None or read_more is None:
        for _ in range(count):
            _check_ok(connection.read_response())  # (raises an error reply)
        return
    got = 0
    try:
        while got < count:
            reply = reader.gets()
            if isinstance(reply, (bytes, str, Exception)):
                _check_ok(reply)
                got += 1
            else:
                read_more()  # (raises redis' TimeoutError or ConnectionError)
    except OSError as exc:
        raise redis.ConnectionError(f"error while reading SET replies: {exc}") from exc


def _check_ok(reply: Any) -> None:
    if isinstance(reply, Exception):
        raise reply if isinstance(reply, redis.RedisError) else redis.ResponseError(str(reply))
    if reply != b"OK" and reply != "OK":
        raise redis.ResponseError(f"unexpected reply to SET: {reply!r}")
