#!/usr/bin/env bash
# The example command-handler Lambda (examples/order-service) under cargo-lambda's runtime
# emulator, sent API Gateway requests against DynamoDB Local: a retried request must be
# answered "already applied", refusals must name the problem. Its events are then relayed
# by `outbox relay dynamodb` to the bus (moto), and each must arrive at the target queue
# exactly once, typed as written.
#
# Needs the emulators running and their env loaded (scripts/test.sh runs it that way).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"
TOOLS_DIR=${OUTBOX_TOOLS_DIR:-$REPO_DIR/.tools}
export PATH="$TOOLS_DIR/cargo-lambda-venv/bin:$PATH"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
EVENTS=$REPO_DIR/examples/order-service/events
PYTHON=$TOOLS_DIR/moto-venv/bin/python   # has boto3, to read the target queue
: "${AWS_ENDPOINT_URL_DYNAMODB:?start the emulators first (scripts/emulators.sh start DIR && . DIR/env)}"
: "${AWS_ENDPOINT_URL_SQS:?start the emulators first}"

log() { printf 'example-check: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

cargo build --quiet -p outbox-cli --bin outbox -p order-service
prefix="example-$$-$(date +%s)"
eval "$("$TARGET_DIR/debug/outbox" bootstrap --prefix "$prefix")"

WATCH_PID= RELAY_PID=
WATCH_LOG=$(mktemp "${TMPDIR:-/tmp}/outbox-example-watch.XXXXXX")
RELAY_LOG=$(mktemp "${TMPDIR:-/tmp}/outbox-example-relay.XXXXXX")
stop_group() {
    local pid=$1
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
}
trap 'stop_group "$WATCH_PID"; stop_group "$RELAY_PID"; rm -f "$WATCH_LOG" "$RELAY_LOG"' EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd examples/order-service && exec setsid cargo lambda watch -A 127.0.0.1 -P "$PORT" </dev/null >"$WATCH_LOG" 2>&1) &
WATCH_PID=$!
for _ in $(seq 300); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$WATCH_PID" 2>/dev/null || { tail -n 40 "$WATCH_LOG" >&2; fail "cargo lambda watch exited"; }
    sleep 0.2
done

# request FIXTURE STATUS [BODY_FIELD=VALUE]: the response must have that status (and field).
request() {
    local fixture=$1 status=$2 field=${3:-} got
    got=$(cargo lambda invoke order-service -A 127.0.0.1 -P "$PORT" --data-file "$EVENTS/$fixture" 2>>"$WATCH_LOG") \
        || { tail -n 40 "$WATCH_LOG" >&2; fail "invoke $fixture"; }
    python3 - "$got" "$status" "$field" <<'PY' || fail "$fixture: expected status $status ${field:+with $field}, got $got"
import json, sys
response, status, field = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = json.loads(response.get("body") or "{}")
ok = response["statusCode"] == status
if field:
    key, _, value = field.partition("=")
    ok = ok and str(body.get(key)).lower() == value.lower()
sys.exit(0 if ok else 1)
PY
    log "ok: $fixture -> $got"
}

request apigw-place-order.json 201 version=1
request apigw-place-order-retry.json 200 alreadyApplied=true
request apigw-pay-order.json 201 version=2
request apigw-pay-order.json 200 alreadyApplied=true
request apigw-pay-too-much.json 422
request apigw-bad-body.json 400
stop_group "$WATCH_PID"; WATCH_PID=

log "relaying the table's events to the bus"
(exec setsid "$TARGET_DIR/debug/outbox" relay dynamodb --lease-table "$prefix-leases" --create-lease-table \
    </dev/null >"$RELAY_LOG" 2>&1) &
RELAY_PID=$!

"$PYTHON" - "$OUTBOX_TARGET_QUEUE_URL" <<'PY' || { tail -n 40 "$RELAY_LOG" >&2; fail "the events did not arrive as written"; }
import json, sys, time
import boto3
queue = sys.argv[1]
sqs = boto3.client("sqs")
seen, deadline = [], time.time() + 60
while len(seen) < 2 and time.time() < deadline:
    for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
        seen.append(json.loads(m["Body"]))
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
time.sleep(2)  # anything more (a duplicate) would have arrived by now
for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
    seen.append(json.loads(m["Body"]))
got = [(e["detail-type"], e["detail"]["aggregate_id"], e["detail"]["sequence"], e["detail"]["payload"]) for e in seen]
expected = [
    ("OrderPlaced", "o-1", 1, {"orderId": "o-1", "total": 1999}),
    ("OrderPaid", "o-1", 2, {"orderId": "o-1", "amount": 1999, "settled": True}),
]
print("example-check: arrived:", got, file=sys.stderr)
sys.exit(0 if sorted(got, key=lambda g: g[2]) == expected else 1)
PY
log "all requests answered as expected; 2 events delivered once each"
