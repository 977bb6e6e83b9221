"""Example feature pipelines, one module each; load one with ``streamfs.registry.load_pipeline``.

    payments      card and merchant activity from card payments (the fraud-feature classic)
    clickstream   user engagement and product popularity from web clicks, with row transforms

Each module also has a seeded ``generate(...)`` producing realistic JSON-ready events;
``pipelines._generate.to_bytes`` turns them into Kafka message values.
"""
