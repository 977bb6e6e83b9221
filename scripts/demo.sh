#!/usr/bin/env bash
# The streamfs demo, run by `make demo` after the virtualenv is installed.
# For now: start the local dev services (embedded Kafka-compatible broker + Redis), show them,
# stop them. The full pipeline demo (produce payments, compute features, read them back) will
# be added here.
set -euo pipefail
cd "$(dirname "$0")/.."
streamfs="${VENV:-.venv}/bin/streamfs"

# Leave services alone that were already running before the demo; stop only what we start.
if "$streamfs" dev status > /dev/null; then
    echo "Dev services were already running; the demo uses them and leaves them running."
else
    "$streamfs" dev up
    trap '"$streamfs" dev down' EXIT
fi

"$streamfs" dev status
