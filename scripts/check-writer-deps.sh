#!/usr/bin/env bash
# The writer crate is what producer services compile: its dependency tree must
# hold no relay code, no DynamoDB Streams SDK, no Lambda event types, and no
# tokio runtime features a library does not need (signal, rt-multi-thread).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

crate=outbox-dynamodb
tree=$(cargo tree -p "$crate" -e normal --prefix none)
features=$(cargo tree -p "$crate" -e normal,features -i tokio --prefix none)
status=0
for forbidden in outbox-dynamodb-relay outbox-eventbridge outbox-lambda aws-sdk-dynamodbstreams aws_lambda_events lambda_runtime; do
    if grep -q "^$forbidden v" <<<"$tree"; then
        echo "check-writer-deps: $crate depends on $forbidden" >&2
        status=1
    fi
done
for feature in signal rt-multi-thread; do
    if grep -q "^tokio feature \"$feature\"" <<<"$features"; then
        echo "check-writer-deps: $crate's tree enables tokio's \"$feature\" feature" >&2
        status=1
    fi
done
if [[ $status -eq 0 ]]; then
    echo "check-writer-deps: $crate's tree holds no relay code ($(sort -u <<<"$tree" | wc -l) crates)" >&2
fi
exit $status
