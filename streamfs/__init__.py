"""streamfs: a streaming feature store. Define features once; serve them fresh; train on their history."""

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.errors import StreamfsError

__all__ = ["Aggregate", "Entity", "FeatureView", "KafkaSource", "StreamfsError"]
__version__ = "0.1.0"
