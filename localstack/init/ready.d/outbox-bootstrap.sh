#!/usr/bin/env bash
# LocalStack READY hook: creates the outbox relay's local resources with
# `outbox bootstrap` (one definition for LocalStack, DynamoDB Local + moto, and
# the tests): table <prefix>-outbox (pk/sk, NEW_IMAGE stream, TTL on ttl), bus
# <prefix>-bus with rule <prefix>-bus-to-queue (source $OUTBOX_SOURCE) to queue
# <prefix>-bus-target, queues <prefix>-quarantine and <prefix>-on-failure.
# Prints the relay's variables (`export OUTBOX_TABLE_NAME=...` lines) to the
# container log and writes them to /tmp/outbox-local.env in the container.
# Exits non-zero (LocalStack shows the hook as ERROR) if that fails.
set -euo pipefail

bin=${OUTBOX_BIN:-/opt/outbox/bin/outbox}
prefix=${OUTBOX_PREFIX:-outbox-local}
source=${OUTBOX_SOURCE:-com.example.orders}
env_file=${OUTBOX_ENV_FILE:-/tmp/outbox-local.env}
# LocalStack serves every service on one port. The AWS SDK's standard variables
# choose the endpoints: set AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_<SERVICE>) to
# try the hook against other emulators.
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://localhost:4566}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}

if [[ ! -x $bin ]] || ! "$bin" --version >/dev/null 2>&1; then
    echo "outbox-bootstrap: $bin is missing or does not run in this container;" >&2
    echo "outbox-bootstrap: run localstack/bootstrap.sh on the host instead" >&2
    exit 1
fi

echo "outbox-bootstrap: creating the '$prefix' resources on $AWS_ENDPOINT_URL" >&2
"$bin" bootstrap --prefix "$prefix" --source "$source" >"$env_file"
cat "$env_file"
