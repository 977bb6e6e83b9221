"""The streaming worker: Kafka → decode → engine → Redis + Parquet, committing offsets only after both.

One `Worker` runs every view of a pipeline over its Kafka topics in one consumer group. Start
as many workers as there are partitions; Kafka's group protocol spreads the partitions.

Modules, each one job, in the order a record meets them:

    loop          Worker: wiring, the consume loop, rebalance callbacks, the host API
    datapath      one polled batch: decode, every view's engine, buffered output
    online_sync   changed keys → Redis, paced; pause and retry while Redis is down
    commit        the commit protocol (below): flush every sink, then commit offsets
    checkpointing engine checkpoints at the offsets about to be committed
    partitions    owned partitions: positions, committed offsets, resume offsets
    ownership     the epoch fence: only a partition's newest owner writes its Parquet files
    options       WorkerOptions and the start-up keying check
    signals       SIGTERM/SIGINT → stop after the current batch

The commit protocol (Worker.commit = Worker.flush, then Worker.commit_offsets) is the only place
offsets advance:

  1. Redis: the serving state of every key changed since the last write is written and
     acknowledged (this also happens between commits, as often as WorkerOptions allow).
  2. Parquet: feature rows and archived events are flushed (fsync'd, renamed into place), each
     partition's only while this worker's ownership claim on it is the newest (ownership).
  3. Dead letters: the producer is flushed and every rejection acknowledged.
  4. Engine checkpoint (every `checkpoint_interval_s`, on revoke and at shutdown): a snapshot of
     each partition's state at exactly the offsets about to be committed (skipped for a
     partition that has not moved since this worker's last checkpoint of it).
  5. The offsets are committed to Kafka, synchronously, then recorded in the worker's commit
     log (CommitLog). A refused commit is retried at the next one; the output stays flushed.

Periodic commits write step 2 on a thread (WorkerOptions.background_parquet): the buffers are
sealed at the commit, written while the loop goes on, and step 5 for those offsets happens at
the first step after the files are durable (Committer.flush_in_background / finish); every
other commit waits for that write first.

A crash anywhere before 5 replays from the previous commit, and replaying changes nothing:
Redis writes are whole-value overwrites of deterministic state, Parquet files of offsets that
were never committed are deleted when the partition is assigned again (OfflineWriter.truncate),
checkpoints beyond the commit are discarded, and the engine state is rebuilt from the newest
checkpoint plus the event archive up to the committed offset (streamfs.recovery). Dead letters
are at-least-once.

Requirement: every view reading a topic is keyed by the same entity, and producers key the
Kafka messages by it, so one entity's events live in one partition (its order and its state are
per partition). A pipeline that breaks this is refused at start-up (see check_co_partitioning).
"""

from streamfs.worker.loop import Worker, run_worker
from streamfs.worker.options import WorkerOptions, check_co_partitioning

__all__ = ["Worker", "WorkerOptions", "check_co_partitioning", "run_worker"]
