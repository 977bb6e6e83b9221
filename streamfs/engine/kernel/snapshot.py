"""One partition of a kernel view's state as its arrays: the kernel's own snapshot format.

The portable format (engine/snapshot.py) turns every key into a KeyState and its tiles into
per-feature partials: about 0.1 ms of pure Python per key, so a second per checkpoint of 10,000
keys, on the worker's loop. This one copies the partition's rows of the kernel's arrays as bytes,
with the count_distinct entries still live, the buffered events, and the interned values they
refer to: a few milliseconds, and a restore puts back exactly the state that was saved. The
complete tiles are derived and left out; they are rebuilt when a row needs them (as after
KernelStore.load).

Rows only mean something to the layout that wrote them, so a snapshot carries the layout's
signature, and a restore into another layout (a streamfs version that lays tiles out
differently) raises StateError: recovery then rebuilds the state from the archive. A view on the
Python engine restores it through a temporary KernelStore and KernelStore.states.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from streamfs.engine.kernel import batch
from streamfs.engine.kernel import distinct as table
from streamfs.engine.kernel.layout import KernelLayout
from streamfs.engine.kernel.store import KernelStore
from streamfs.engine.snapshot import as_tuples
from streamfs.engine.state import Key
from streamfs.errors import StateError

FORMAT = "kernel-2"
"""kernel-2: count_distinct entries per (key, field, value), not per feature (distinct.py)."""
_ROWS = ("maxt", "seq", "tids", "icell", "kcell", "fcell", "tot")


def signature(layout: KernelLayout) -> str:
    """What the rows of a snapshot depend on: the layout's tables and widths."""
    digest = hashlib.sha256(FORMAT.encode())
    for array in (
        layout.groups, layout.ops, layout.readers, layout.distinct_hop, layout.distinct_span,
        layout.distinct_field,
    ):  # fmt: skip
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    digest.update(repr((layout.widths, layout.id_columns, layout.lateness, layout.cells)).encode())
    return digest.hexdigest()[:16]


def take(store: KernelStore, view: str, fingerprint: str, partition: int) -> dict[str, Any]:
    """The snapshot of `partition` (plain values: JSON-able with streamfs.engine.snapshot.to_json)."""
    keyed = store.partitions.get(partition, {})
    keys = [key for key, slot in keyed.items() if store.maxt[slot] != batch.UNSEEN]  # (others hold nothing)
    slots = np.array([keyed[key] for key in keys], dtype=np.int64)
    rows = {array: getattr(store, array)[slots] for array in _ROWS}
    id_cells = _id_cells(store.layout)
    kcell = rows["kcell"]
    unset = kcell[:, id_cells - 1] == 0  # seq 0: no value kept, the id means nothing
    kcell[:, id_cells] = np.where(unset, -1, kcell[:, id_cells])
    # One pass over the whole table costs about what walking the rows of 1/9 of its keys does.
    held = len(store.owner) - len(store.free)
    entries = table.scan_live_entries if 8 * len(slots) >= held else table.live_entries
    entry_rows, entry_fields, entry_ids, entry_times = entries(store.table, store.heads, slots, store.reach())
    buffer_rows, buffered = _buffered(store.bhead, store.bnext, slots)
    buffer_ids = store.bids[buffered]
    id_columns = len(store.layout.id_columns)  # (bids has one unused column when there are none)
    buffer_ids[:, id_columns:] = -1
    used = np.unique(np.concatenate([kcell[:, id_cells].ravel(), buffer_ids.ravel(), entry_ids]))
    used = used[used >= 0]

    def local(ids: np.ndarray) -> np.ndarray:
        """The store's value ids as positions in the snapshot's list of values (-1 stays)."""
        return np.where(ids >= 0, np.searchsorted(used, ids), ids)

    kcell[:, id_cells] = local(kcell[:, id_cells])
    return {
        "format": FORMAT,
        "view": view,
        "fingerprint": fingerprint,
        "layout": signature(store.layout),
        "partition": partition,
        "keys": [list(key) for key in keys],
        "values": [store.id_values[vid] for vid in used.tolist()],
        "rows": {array: _pack(values) for array, values in rows.items()},
        "distinct": {
            "row": _pack(entry_rows),
            "field": _pack(entry_fields),
            "id": _pack(local(entry_ids)),
            "time": _pack(entry_times),
        },
        "buffer": {
            "row": _pack(buffer_rows),
            "time": _pack(store.btime[buffered]),
            "seq": _pack(store.bseq[buffered]),
            "values": _pack(store.bvals[buffered]),
            "ids": _pack(local(buffer_ids)),
        },
    }


def put(store: KernelStore, snapshot: dict[str, Any]) -> int:
    """Replace the snapshot's partition in `store` with the snapshot's state; return the partition.

    StateError if the snapshot was written for another layout (nothing changed then)."""
    if snapshot.get("layout") != signature(store.layout):
        raise StateError(
            "the kernel snapshot was written for another layout of the view's state "
            "(another streamfs version); rebuild the state from the archive"
        )
    partition = int(snapshot["partition"])
    keys: list[Key] = [tuple(as_tuples(part) for part in key) for key in snapshot["keys"]]
    store.drop(partition)
    slots = np.array([store.slot(partition, key) for key in keys], dtype=np.int64)
    new_ids = np.array([store.value_id(as_tuples(value)) for value in snapshot["values"]], dtype=np.int64)

    def renumber(ids: np.ndarray) -> np.ndarray:
        """Positions in the snapshot's values to this store's value ids (-1, no value, stays)."""
        if not len(new_ids):
            return ids
        return np.where(ids >= 0, new_ids[np.clip(ids, 0, len(new_ids) - 1)], ids)

    rows = {name: _unpack(packed) for name, packed in snapshot["rows"].items()}
    id_cells = _id_cells(store.layout)
    rows["kcell"][:, id_cells] = renumber(rows["kcell"][:, id_cells])
    for name in _ROWS:
        getattr(store, name)[slots] = rows[name]
    store.cvalid[slots] = 0
    distinct = {name: _unpack(packed) for name, packed in snapshot["distinct"].items()}
    if len(distinct["row"]):
        store.reserve(len(distinct["row"]))
        table.insert_entries(
            store.table, store.heads, store.meta, slots[distinct["row"]], distinct["field"],
            renumber(distinct["id"]), distinct["time"], store.fields,
        )  # fmt: skip
    buffer = {name: _unpack(packed) for name, packed in snapshot["buffer"].items()}
    if len(buffer["row"]):
        store.reserve_buffer(len(buffer["row"]))
        ids = buffer["ids"]
        batch.buffer_push_all(
            store.buffer, slots[buffer["row"]], buffer["time"], buffer["seq"], buffer["values"],
            renumber(ids.ravel()).reshape(ids.shape),
        )  # fmt: skip
    return partition


def _id_cells(layout: KernelLayout) -> np.ndarray:
    """The kcell columns holding a value id (last/first of a value the kernel interns): each
    follows its (time, seq) pair, so column - 1 is the seq (0 when no value is kept)."""
    columns = []
    for g, cells in enumerate(layout.cells):
        _hop, ring, _t, _i, _ni, k_off, nk, _f, _nf, _tot = (int(x) for x in layout.groups[g])
        for cell in cells:
            if cell.kind in (batch.OP_LAST, batch.OP_FIRST) and cell.fcell < 0:
                columns += [k_off + r * nk + cell.kcell + 2 for r in range(ring)]
    return np.array(columns, dtype=np.int64)


def _pack(array: np.ndarray) -> dict[str, Any]:
    """An array as JSON-able text: zstd (3x faster than zlib here, and smaller), then base64."""
    raw = np.ascontiguousarray(array).tobytes()
    data = base64.b64encode(pa.compress(raw, codec="zstd", asbytes=True)).decode("ascii")
    return {"dtype": array.dtype.str, "shape": list(array.shape), "bytes": len(raw), "zstd": data}


def _unpack(packed: dict[str, Any]) -> np.ndarray:
    raw = pa.decompress(base64.b64decode(packed["zstd"]), packed["bytes"], codec="zstd", asbytes=True)
    return np.frombuffer(raw, dtype=np.dtype(packed["dtype"])).reshape(packed["shape"]).copy()


@numba.njit(cache=True)
def _buffered(bhead: np.ndarray, bnext: np.ndarray, slots: np.ndarray):  # type: ignore[no-untyped-def]
    """(row in `slots`, buffer entry) of every buffered event of these keys, in list order."""
    count = 0
    for slot in slots:
        e = bhead[slot]
        while e != -1:
            count += 1
            e = bnext[e]
    rows = np.empty(count, np.int64)
    entries = np.empty(count, np.int64)
    i = 0
    for r in range(len(slots)):
        e = bhead[slots[r]]
        while e != -1:
            rows[i] = r
            entries[i] = e
            i += 1
            e = bnext[e]
    return rows, entries
