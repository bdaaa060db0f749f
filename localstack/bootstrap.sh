#!/usr/bin/env bash
# Creates the outbox relay's local resources on a running emulator from the
# host, with `outbox bootstrap` (the same code as the LocalStack init hook, the
# demo and the tests), and prints the relay's variables as shell `export` lines.
#
#   eval "$(localstack/bootstrap.sh)"                # LocalStack on 127.0.0.1:4566
#   localstack/bootstrap.sh --prefix orders          # other resource names
#   AWS_ENDPOINT_URL=http://127.0.0.1:PORT localstack/bootstrap.sh
#                                                    # another endpoint, e.g. scripts/localstack.sh's
#   . "$emulators_dir/env" && localstack/bootstrap.sh
#                                                    # one endpoint per service (scripts/emulators.sh:
#                                                    # DynamoDB Local + moto)
#
# Endpoints come only from the AWS SDK's standard variables: AWS_ENDPOINT_URL, and
# AWS_ENDPOINT_URL_<SERVICE> (DYNAMODB, DYNAMODB_STREAMS, EVENTBRIDGE, SQS), which win over
# it for their service. With none of them set, AWS_ENDPOINT_URL is LocalStack's default,
# http://127.0.0.1:4566. Credentials and region default to test / us-east-1 when unset.
#
# Extra arguments go to `outbox bootstrap` (--prefix, --source). Uses
# target/release/outbox or target/debug/outbox if built, else `cargo run`.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ -z $(compgen -e | grep '^AWS_ENDPOINT_URL' || true) ]]; then
    export AWS_ENDPOINT_URL=http://127.0.0.1:4566
fi
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}

# Wait until the DynamoDB endpoint answers: LocalStack's health check once it serves
# requests, or any HTTP answer from another emulator.
endpoint=${AWS_ENDPOINT_URL_DYNAMODB:-${AWS_ENDPOINT_URL:-}}
if [[ -n $endpoint ]]; then
    for ((i = 0; i < 60; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${endpoint%/}/_localstack/health" 2>/dev/null || true)
        [[ $code =~ ^[1-5][0-9][0-9]$ ]] && break
        ((i == 59)) && { echo "bootstrap: nothing answers on $endpoint" >&2; exit 1; }
        sleep 1
    done
fi

for bin in "$REPO_DIR/target/release/outbox" "$REPO_DIR/target/debug/outbox"; do
    if [[ -x $bin ]]; then
        exec "$bin" bootstrap "$@"
    fi
done
cd "$REPO_DIR"
exec cargo run --quiet -p outbox-cli --bin outbox -- bootstrap "$@"
