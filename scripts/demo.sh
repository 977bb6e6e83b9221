#!/usr/bin/env bash
# The streamfs demo, run by `make demo` after the virtualenv is installed: start the local dev
# services (embedded Kafka-compatible broker + Redis), produce payments, run the worker until it
# has caught up, print features read back from Redis and rows from Parquet, stop the services.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
streamfs="$venv/bin/streamfs"
export STREAMFS_DATA_DIR="${STREAMFS_DATA_DIR:-$(mktemp -d)/data}"

# Leave services alone that were already running before the demo; stop only what we start.
if "$streamfs" dev status > /dev/null; then
    echo "Dev services were already running; the demo uses them and leaves them running."
else
    "$streamfs" dev up
    trap '"$streamfs" dev down' EXIT
fi
"$venv/bin/python" -m streamfs.demo
