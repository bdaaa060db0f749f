#!/usr/bin/env bash
# Creates the outbox relay's local resources on a running emulator from the
# host, with `outbox bootstrap` (the same code as the LocalStack init hook, the
# demo and the tests), and prints the relay's variables as NAME=value lines.
#
#   localstack/bootstrap.sh                          # LocalStack on 127.0.0.1:4566
#   localstack/bootstrap.sh --prefix orders          # other resource names
#   OUTBOX_DYNAMODB_ENDPOINT=http://127.0.0.1:8000 OUTBOX_MOTO_ENDPOINT=http://127.0.0.1:5000 \
#       localstack/bootstrap.sh                      # DynamoDB Local + moto (scripts/emulators.sh)
#
# Extra arguments go to `outbox bootstrap` (--prefix, --source). Uses
# target/release/outbox or target/debug/outbox if built, else `cargo run`.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
endpoint=${LOCALSTACK_ENDPOINT:-http://127.0.0.1:4566}
dynamodb=${OUTBOX_DYNAMODB_ENDPOINT:-$endpoint}
moto=${OUTBOX_MOTO_ENDPOINT:-$endpoint}

if [[ $dynamodb == "$endpoint" ]]; then
    # LocalStack answers its health check once it serves requests.
    for ((i = 0; i < 60; i++)); do
        curl -fsS -o /dev/null "$endpoint/_localstack/health" 2>/dev/null && break
        ((i == 59)) && { echo "bootstrap: nothing answers on $endpoint" >&2; exit 1; }
        sleep 1
    done
fi

for bin in "$REPO_DIR/target/release/outbox" "$REPO_DIR/target/debug/outbox"; do
    if [[ -x $bin ]]; then
        exec "$bin" bootstrap --dynamodb-endpoint "$dynamodb" --moto-endpoint "$moto" "$@"
    fi
done
cd "$REPO_DIR"
exec cargo run --quiet -p outbox-cli --bin outbox -- bootstrap \
    --dynamodb-endpoint "$dynamodb" --moto-endpoint "$moto" "$@"
