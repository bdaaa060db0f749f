#!/usr/bin/env bash
# Runs the Python peer (python/handler.py: Powertools BatchProcessor + boto3
# put_events) under python/run.py, in a venv cached in .tools/peer-python-venv
# and built from python/requirements.txt (exact pins) on first use.
#
#   bench/peers/run-python-peer.sh --endpoint URL --event FILE [--iterations N] [--latency-ms L]
#   bench/peers/run-python-peer.sh --endpoint URL --startup 10
#
# Arguments go to run.py; it prints one JSON line per measurement.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$REPO_DIR/.tools/peer-python-venv"
REQUIREMENTS="$REPO_DIR/bench/peers/python/requirements.txt"
PYTHON=${PYTHON:-python3}

if [[ ! -x "$VENV/bin/python" ]] || ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt"; then
    echo "run-python-peer: installing the peer's pinned requirements into $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2
    cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi

exec "$VENV/bin/python" "$REPO_DIR/bench/peers/python/run.py" "$@"
