"""numba's cache of the kernel, emptied when any of the kernel's sources changed.

numba keys a function's cached machine code by the modification time and size of that
function's own file, and nothing else. The kernel's loops compile in helpers from other modules
(fixed, distinct, prefetch): after a change to fixed.py alone, batch.process loads its cached
code, which holds the old helpers (seen with numba 0.68: a helper changed from x + 1 to x + 2,
and its caller in another file went on returning the old sum). A git checkout or pull rewrites
only the files that changed, so a development tree meets this, and its tests would run old code;
an install rewrites every file, so the stamps of all change.

So the kernel stamps its cache directory with a digest of all of its sources and numba's
version, and removes numba's files there (*.nbi indexes, *.nbc code) when the stamp differs:
the next call of each function compiles it again. Two processes doing this at once only
compile twice; numba treats a data file removed under its index as a miss.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numba

STAMP_NAME = "streamfs-kernel-sources.sha256"


def sources_digest(package: Path) -> str:
    """sha256 of the package's Python sources (names and bytes, in name order) and numba's version."""
    digest = hashlib.sha256(numba.__version__.encode())
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_directory(dispatcher: Any, package: Path) -> Path:
    """Where numba caches a compiled function of the package: beside the sources (__pycache__)
    when that is writable, else the user's cache directory or NUMBA_CACHE_DIR; numba's own
    answer when its dispatcher gives it (an internal attribute, so with a fallback)."""
    path = getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
    return Path(path) if isinstance(path, str) else package / "__pycache__"


def drop_stale(directory: Path, digest: str) -> bool:
    """Remove numba's cache files from `directory` unless its stamp is `digest`, then stamp it.
    True when files were removed. A directory that cannot be read or written is left alone
    (numba then compiles without caching, as it does there anyway)."""
    stamp = directory / STAMP_NAME
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass  # no stamp yet: whatever is cached there may be from other sources
    removed = False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path in [*directory.glob("*.nbi"), *directory.glob("*.nbc")]:
            path.unlink(missing_ok=True)
            removed = True
        temporary = directory / f"{STAMP_NAME}.{os.getpid()}"
        temporary.write_text(digest)
        temporary.replace(stamp)
    except OSError:
        return removed
    return removed
