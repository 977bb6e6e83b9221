"""The exceptions streamfs raises, all rooted at :class:`StreamfsError`.

Exceptions are for what a person must act on. Bad *events* are data, not exceptions:
they become :class:`streamfs.records.Rejected` values and flow to the dead-letter sink.

    StreamfsError
    ├── DefinitionError      a feature definition is invalid (names the offending field)
    ├── PipelineLoadError    a pipeline import string cannot be loaded
    ├── ConfigError          settings are missing or contradictory
    ├── ServiceError         a backing service (broker, Redis) cannot be started or reached
    ├── StateError           engine state cannot be restored (version or view mismatch)
    └── OfflineError         a training-set or backfill request cannot be served
"""

from __future__ import annotations


class StreamfsError(Exception):
    """Root of every error streamfs raises on purpose."""


class DefinitionError(StreamfsError, ValueError):
    """A feature definition is invalid; the message names the offending object and field."""


class PipelineLoadError(StreamfsError):
    """A pipeline import string does not resolve to feature views."""


class ConfigError(StreamfsError):
    """Settings are missing, malformed or contradictory."""


class ServiceError(StreamfsError):
    """A broker or Redis could not be started, reached, or stopped."""


class StateError(StreamfsError):
    """A snapshot does not match the engine it is restored into."""


class OfflineError(StreamfsError, ValueError):
    """A training-set, backfill or verify request is invalid or cannot be served."""
