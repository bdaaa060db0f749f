#!/usr/bin/env bash
# The end-to-end demo on local emulators: installs them on first use (into
# .tools/), builds the `outbox` command, starts DynamoDB Local and moto on
# 127.0.0.1, runs `outbox demo`, and stops the emulators again.
#
#   ./scripts/demo.sh               # 20 orders
#   ./scripts/demo.sh --orders 50   # extra arguments go to `outbox demo`
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"

scripts/emulators.sh install
echo "building the outbox command (the first build takes a few minutes)" >&2
cargo build --quiet -p outbox-cli --bin outbox

STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/outbox-demo.XXXXXX")
cleanup() {
    scripts/emulators.sh stop "$STATE_DIR" >&2 || true
    rm -rf "$STATE_DIR"
}
trap cleanup EXIT
ENV_FILE=$(scripts/emulators.sh start "$STATE_DIR")
# shellcheck disable=SC1090
. "$ENV_FILE"

"${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug/outbox" demo "$@"
