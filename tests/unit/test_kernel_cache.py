"""numba's cache and the kernel's sources (engine/kernel/cachestamp.py).

numba checks only a compiled function's own file before loading its cached code, so a change
to a helper in another file leaves its callers' cached code stale. These runs use a two-file
package of their own, each step in a fresh process (as a new worker, or a new test run, loads
the cache): the caller must see the helper's change once the sources' stamp is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HELPER = """
import numba

@numba.njit(cache=True)
def helper(x):
    return x + {step}
"""

CALLER = """
import numba
from toy.helpers import helper

@numba.njit(cache=True)
def caller(x):
    return helper(x) * 10
"""

RUN = """
import sys
from pathlib import Path
from streamfs.engine.kernel import cachestamp
from toy import calls
package = Path(calls.__file__).parent
dropped = cachestamp.drop_stale(
    cachestamp.cache_directory(calls.caller, package), cachestamp.sources_digest(package)
)
print(calls.caller(1), dropped)
"""


def run(tmp_path: Path) -> tuple[int, bool]:
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    environment.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", RUN], env=environment, capture_output=True, text=True, check=True, timeout=120
    )
    value, dropped = done.stdout.split()
    return int(value), dropped == "True"


def test_a_helpers_change_reaches_its_callers_cached_code(tmp_path: Path) -> None:
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text(HELPER.format(step=1))
    (package / "calls.py").write_text(CALLER)

    assert run(tmp_path) == (20, False)  # compiled and cached; the directory stamped
    cached = sorted(p.name for p in (package / "__pycache__").glob("calls.caller*.nb*"))
    assert cached, "numba cached nothing: the test would not show the cache's behaviour"
    assert run(tmp_path) == (20, False)  # unchanged sources: the cache stays

    (package / "helpers.py").write_text(HELPER.format(step=2))  # only the helper's file changes
    assert run(tmp_path) == (30, True)
    assert run(tmp_path) == (30, False)
