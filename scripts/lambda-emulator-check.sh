#!/usr/bin/env bash
# The real outbox-lambda binary under cargo-lambda's runtime emulator (`cargo lambda watch`),
# invoked with the JSON fixtures, must answer the expected batchItemFailures; `outbox invoke`
# (the same handler outside Lambda) must print the same response.
#
# Needs the emulators running and their env loaded (AWS_ENDPOINT_URL_*,
# AWS_*): scripts/test.sh runs it that way. cargo-lambda comes
# from .tools/cargo-lambda-venv (scripts/emulators.sh install).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"
TOOLS_DIR=${OUTBOX_TOOLS_DIR:-$REPO_DIR/.tools}
export PATH="$TOOLS_DIR/cargo-lambda-venv/bin:$PATH"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
FIXTURES=$REPO_DIR/tests/fixtures
: "${AWS_ENDPOINT_URL_DYNAMODB:?start the emulators first (scripts/emulators.sh start DIR && . DIR/env)}"
: "${AWS_ENDPOINT_URL_EVENTBRIDGE:?start the emulators first}"

log() { printf 'lambda-check: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

cargo build --quiet -p outbox-cli --bin outbox -p outbox-lambda --bin outbox-lambda
prefix="lambda-check-$$-$(date +%s)"
eval "$("$TARGET_DIR/debug/outbox" bootstrap --prefix "$prefix")"
export OUTBOX_RETRY_BASE_MS=5 OUTBOX_MAX_RETRIES=1

WATCH_PID=
WATCH_LOG=$(mktemp "${TMPDIR:-/tmp}/outbox-lambda-watch.XXXXXX")
stop_watch() {
    if [[ -n $WATCH_PID ]] && kill -0 "$WATCH_PID" 2>/dev/null; then
        kill -TERM -- "-$WATCH_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$WATCH_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$WATCH_PID" 2>/dev/null || true
    fi
    WATCH_PID=
}
trap 'stop_watch; rm -f "$WATCH_LOG"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts `cargo lambda watch` on 127.0.0.1 with the current environment.
start_watch() {
    PORT=$(free_port)
    (cd crates/outbox-lambda && exec setsid cargo lambda watch -A 127.0.0.1 -P "$PORT" </dev/null >"$WATCH_LOG" 2>&1) &
    WATCH_PID=$!
    for _ in $(seq 300); do
        if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        kill -0 "$WATCH_PID" 2>/dev/null || { tail -n 40 "$WATCH_LOG" >&2; fail "cargo lambda watch exited"; }
        sleep 0.2
    done
    tail -n 40 "$WATCH_LOG" >&2
    fail "cargo lambda watch did not listen on 127.0.0.1:$PORT"
}

# invoke FIXTURE EXPECTED_JSON
invoke() {
    local fixture=$1 expected=$2 got
    got=$(cargo lambda invoke outbox-lambda -A 127.0.0.1 -P "$PORT" --data-file "$FIXTURES/$fixture" 2>>"$WATCH_LOG") \
        || { tail -n 40 "$WATCH_LOG" >&2; fail "invoke $fixture"; }
    python3 - "$got" "$expected" <<'PY' || fail "$fixture: got $got, expected $expected"
import json, sys
got, expected = (json.loads(a) for a in sys.argv[1:3])
sys.exit(0 if got == expected else 1)
PY
    # `outbox invoke` runs the same handler outside Lambda: it must print the same response.
    local local_got
    local_got=$("$TARGET_DIR/debug/outbox" invoke --event "$FIXTURES/$fixture" 2>>"$WATCH_LOG") \
        || { tail -n 20 "$WATCH_LOG" >&2; fail "outbox invoke $fixture"; }
    python3 - "$local_got" "$expected" <<'PY' || fail "outbox invoke $fixture: got $local_got, expected $expected"
import json, sys
got, expected = (json.loads(a) for a in sys.argv[1:3])
sys.exit(0 if got == expected else 1)
PY
    log "ok: $fixture -> $got (cargo lambda invoke and outbox invoke agree)"
}

poison_sequence=$(python3 - "$FIXTURES/dynamodb-mixed-batch.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["Records"]:
    if "S" in r["dynamodb"].get("NewImage", {}).get("sequence", {}):
        print(r["dynamodb"]["SequenceNumber"]); break
PY
)
[[ -n $poison_sequence ]] || fail "no poison record in dynamodb-mixed-batch.json"

log "case 1: working bus and quarantine: every fixture is fully handled"
start_watch
for f in insert modify ttl-remove foreign-item malformed-outbox-item unknown-event-name mixed-batch; do
    invoke "dynamodb-$f.json" '{"batchItemFailures":[]}'
done
stop_watch

log "case 2: the quarantine queue does not exist: the poison record is the reported failure"
queue_url=$OUTBOX_QUARANTINE_QUEUE_URL
export OUTBOX_QUARANTINE_QUEUE_URL="$queue_url-missing"
start_watch
invoke dynamodb-mixed-batch.json "{\"batchItemFailures\":[{\"itemIdentifier\":\"$poison_sequence\"}]}"
stop_watch
export OUTBOX_QUARANTINE_QUEUE_URL=$queue_url

first_insert=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Records"][0]["dynamodb"]["SequenceNumber"])' "$FIXTURES/dynamodb-insert.json")
log "case 3: the bus does not exist: the first record is the reported failure"
export OUTBOX_EVENT_BUS_NAME="$OUTBOX_EVENT_BUS_NAME-missing"
start_watch
invoke dynamodb-insert.json "{\"batchItemFailures\":[{\"itemIdentifier\":\"$first_insert\"}]}"
stop_watch

log "all cases passed"
