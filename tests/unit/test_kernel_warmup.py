"""warm_up loads every compiled function a worker's batches use, with the argument types they
use them with: a type it did not load (a read-only array from Arrow, say) is compiled or loaded
again in the first batch, in the middle of consuming (~60 s from an empty numba cache)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil
    from datetime import UTC, datetime

    import orjson
    from numba.core.registry import CPUDispatcher

    import streamfs.engine.kernel as kernel
    from pipelines.payments import card_activity, generate, payments
    from streamfs.decode_batch import BatchDecoder
    from streamfs.engine import ViewEngine

    names = [m.name for m in pkgutil.iter_modules(kernel.__path__)]
    modules = [importlib.import_module(f"{kernel.__name__}.{name}") for name in names]

    def signatures():
        return {
            f"{module.__name__}.{name}": len(value.signatures)
            for module in modules
            for name, value in vars(module).items()
            if isinstance(value, CPUDispatcher)
        }

    engine = ViewEngine(card_activity)
    engine.warm_up()
    before = signatures()
    start = datetime(2024, 3, 1, tzinfo=UTC)
    events = [orjson.dumps(e) for e in generate(3000, keys=500, start=start, seed=1)]
    decoder = BatchDecoder.build(payments)
    for start in range(0, 3000, 1000):
        offsets = list(range(start, start + 1000))
        table = decoder.decode("payments", 0, offsets, events[start : start + 1000], [1709251200000] * 1000)
        assert engine.process_table(table) is not None
    engine.serving_columns(engine.take_dirty())
    after = signatures()
    print(sorted(name for name, count in after.items() if count != before[name]))
    """
)


def test_a_worker_batch_after_warm_up_loads_no_compiled_function_again() -> None:
    # (a process of its own: this one's functions were compiled for whatever other tests passed)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
