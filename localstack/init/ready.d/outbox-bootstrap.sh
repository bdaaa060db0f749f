#!/usr/bin/env bash
# LocalStack READY hook: creates the outbox relay's local resources with
# `outbox bootstrap` (one definition for LocalStack, DynamoDB Local + moto, and
# the tests): table <prefix>-outbox (pk/sk, NEW_IMAGE stream, TTL on ttl), bus
# <prefix>-bus with rule <prefix>-bus-to-queue (source $OUTBOX_SOURCE) to queue
# <prefix>-bus-target, queues <prefix>-quarantine and <prefix>-on-failure.
# Prints the relay's variables (OUTBOX_TABLE_NAME=... lines) to the container
# log and writes them to /tmp/outbox-local.env in the container.
# Exits non-zero (LocalStack shows the hook as ERROR) if that fails.
set -euo pipefail

bin=${OUTBOX_BIN:-/opt/outbox/bin/outbox}
prefix=${OUTBOX_PREFIX:-outbox-local}
source=${OUTBOX_SOURCE:-com.example.orders}
# LocalStack serves every service on one port; the overrides are for trying
# the hook against other emulators.
dynamodb=${OUTBOX_DYNAMODB_ENDPOINT:-http://localhost:4566}
moto=${OUTBOX_MOTO_ENDPOINT:-http://localhost:4566}
env_file=${OUTBOX_ENV_FILE:-/tmp/outbox-local.env}

if [[ ! -x $bin ]] || ! "$bin" --version >/dev/null 2>&1; then
    echo "outbox-bootstrap: $bin is missing or does not run in this container;" >&2
    echo "outbox-bootstrap: run localstack/bootstrap.sh on the host instead" >&2
    exit 1
fi

echo "outbox-bootstrap: creating the '$prefix' resources on $dynamodb and $moto" >&2
"$bin" bootstrap --dynamodb-endpoint "$dynamodb" --moto-endpoint "$moto" \
    --prefix "$prefix" --source "$source" >"$env_file"
cat "$env_file"
