"""Example feature pipelines, one module each; load one with ``streamfs.registry.load_pipeline``.

    payments      card and merchant activity from card payments (the fraud-feature classic)
    clickstream   user engagement and product popularity from web clicks, with row transforms

Each module also has a seeded ``generate(...)`` producing realistic JSON-ready events, and
``generate_bytes(...)`` producing them as Kafka message values.
"""
