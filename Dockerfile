# The streamfs worker image: `docker build -t streamfs .`, then `docker run streamfs run <pipeline>`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what the package needs: keeps the build context small and the layer cache useful.
COPY pyproject.toml README.md ./
COPY streamfs ./streamfs
COPY pipelines ./pipelines
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app streamfs \
    && mkdir -p /data /var/lib/streamfs \
    && chown streamfs /data /var/lib/streamfs

USER 10001
ENV STREAMFS_DATA_DIR=/data \
    STREAMFS_STATE_DIR=/var/lib/streamfs \
    STREAMFS_METRICS_PORT=9108
# /metrics (Prometheus), /healthz (liveness), /readyz (readiness)
EXPOSE 9108
ENTRYPOINT ["streamfs"]
CMD ["run", "pipelines.payments"]
