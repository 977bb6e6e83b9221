"""The worker's historical import path: `from streamfs.runner import Worker, WorkerOptions`.

The worker lives in the streamfs.worker package (one module per job; its docstring describes
the loop and the commit protocol). This module re-exports its public names.
"""

from streamfs.worker import Worker, WorkerOptions, check_co_partitioning, run_worker

__all__ = ["Worker", "WorkerOptions", "check_co_partitioning", "run_worker"]
