"""The online store (Redis): OnlineWriter writes serving states, FeatureClient reads features.

The key/value layout lives in :mod:`streamfs.online.layout` and nowhere else;
docs/storage-online.md describes it.
"""

from streamfs.online.client import FeatureClient, FeatureResult, ReadPlan, UnknownFeatureError
from streamfs.online.layout import Freshness, ViewMeta
from streamfs.online.writer import OnlineWriter

__all__ = [
    "FeatureClient",
    "FeatureResult",
    "Freshness",
    "OnlineWriter",
    "ReadPlan",
    "UnknownFeatureError",
    "ViewMeta",
]
