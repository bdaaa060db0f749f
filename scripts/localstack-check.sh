#!/usr/bin/env bash
# template.yaml deployed into LocalStack, and the relay run through the deployed stack.
#
#   scripts/localstack-check.sh            # install what is missing, then check everything
#   scripts/localstack-check.sh deploy     # only up to the deployed stack's wiring (no `outbox` needed)
#   scripts/localstack-check.sh install    # install only
#
# Steps, each timed; any failure fails the script (nothing is skipped):
#   1. LocalStack on 127.0.0.1 (scripts/localstack.sh, host mode, no Docker), with
#      CloudFormation and CloudWatch beside the relay's services;
#   2. `samlocal deploy` of template.yaml with RelayHost=none (LocalStack runs functions
#      only in Docker): the table and its stream, the bus, the example rule and its queue
#      and queue policy, the quarantine and on-failure queues and their alarms, the
#      claim-check bucket;
#   3. the stack's wiring, with boto3: the table's NEW_IMAGE stream and TTL (an item put
#      is read back from the stream), the bus's rule (an event of the example source
#      reaches the example queue, one of another source does not), the two queues, the
#      claim-check bucket (SSE-S3, an object put and read back);
#   4. the standalone relay (`outbox relay dynamodb`) on the stack's table, bus and queues,
#      while N events (OUTBOX_LOCALSTACK_EVENTS, default 100) are committed to the table
#      the way the writer does (crates/outbox-dynamodb/src/item.rs: the order and its
#      outbox item in one TransactWriteItems) and one 300 KB poison item is put: all N
#      must reach the example queue, the poison item the quarantine queue through the
#      stack's claim-check bucket (the message names the object, SSE-S3, read back whole);
#   5. `outbox invoke --event tests/fixtures/dynamodb-mixed-batch.json` against the stack:
#      no batch item failure, its 3 events at the example queue, its malformed item in
#      the quarantine queue.
#
# Clients are pointed at LocalStack only through AWS_ENDPOINT_URL (and test credentials,
# us-east-1): the caller's AWS_ENDPOINT_URL_<SERVICE>, AWS profile and OUTBOX_* variables
# are cleared first.
#
# Env: OUTBOX_BIN (default target/debug/outbox; steps 4-5 fail if it is missing: build it with
# `cargo build -p outbox-cli --bin outbox`), OUTBOX_LOCALSTACK_EVENTS, OUTBOX_TOOLS_DIR (cache,
# default <repo>/.tools: localstack-venv from scripts/localstack.sh install, deploy-venv with
# aws-sam-cli and aws-sam-cli-local from scripts/deploy-check.sh install-venv). Network is
# only used to install.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
TOOLS_DIR=${OUTBOX_TOOLS_DIR:-$REPO_DIR/.tools}
OUTBOX=${OUTBOX_BIN:-$REPO_DIR/target/debug/outbox}
EVENTS=${OUTBOX_LOCALSTACK_EVENTS:-100}
TEMPLATE=$REPO_DIR/template.yaml
FIXTURE=$REPO_DIR/tests/fixtures/dynamodb-mixed-batch.json
# samlocal, boto3: the venv scripts/deploy-check.sh installs (aws-sam-cli, pinned there).
SAM_VENV=$TOOLS_DIR/deploy-venv
# What the deployment needs beside the relay's services: CloudFormation, and CloudWatch
# for the queue alarms (S3 holds what `sam deploy` uploads).
SERVICES=dynamodb,dynamodbstreams,events,sqs,s3,cloudformation,cloudwatch
STACK=outbox-check
LEASE_TABLE=$STACK-leases

log() { printf 'localstack-check: %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { if [[ -n ${EPOCHREALTIME:-} ]]; then printf '%s' "${EPOCHREALTIME/,/.}"; else date +%s; fi; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[[ $EVENTS =~ ^[1-9][0-9]*$ ]] || die "OUTBOX_LOCALSTACK_EVENTS=$EVENTS is not a positive number"

# ---------------------------------------------------------------- install

cmd_install() {
    mkdir -p "$TOOLS_DIR"
    OUTBOX_TOOLS_DIR=$TOOLS_DIR "$SCRIPT_DIR/localstack.sh" install
    OUTBOX_TOOLS_DIR=$TOOLS_DIR "$SCRIPT_DIR/deploy-check.sh" install-venv
    [[ -x $SAM_VENV/bin/samlocal ]] || die "no samlocal in $SAM_VENV after scripts/deploy-check.sh install-venv"
}

# ---------------------------------------------------------------- the boto3 side

# Writes the helper the steps run (with the samlocal venv's boto3, which reads
# AWS_ENDPOINT_URL): `bucket`, `outputs`, `resources`, `write N`, `await-relay`, `await-invoke`.
write_helper() {
    cat >"$STATE_DIR/check.py" <<'PY'
"""The boto3 side of scripts/localstack-check.sh. Endpoint, credentials and region come
from the standard AWS variables; the stack's resources from OUTBOX_* variables."""
import datetime as dt
import json
import os
import secrets
import sys
import time
import uuid

import boto3

ddb, streams, events, sqs = (boto3.client(s) for s in ("dynamodb", "dynamodbstreams", "events", "sqs"))
env = os.environ.get


def fail(message):
    sys.exit(f"FAIL {message}")


def uuid7(ms):
    r = int.from_bytes(secrets.token_bytes(10), "big")
    return str(uuid.UUID(int=(ms << 80) | (7 << 76) | ((r >> 68) & 0xFFF) << 64 | (2 << 62) | (r & ((1 << 62) - 1))))


def receive(url, wanted, seconds, match=lambda body: True):
    """Receives (and deletes) messages of `url` until `wanted` of them match or time is up;
    returns (matching bodies, other bodies)."""
    got, other = [], []
    deadline = time.time() + seconds
    while len(got) < wanted and time.time() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            body = json.loads(m["Body"])
            (got if match(body) else other).append(body)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got, other


def outputs(stack):
    """The stack's outputs as the relay's variables (NAME=value lines)."""
    out = {o["OutputKey"]: o["OutputValue"]
           for o in boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    names = {"TableName": "OUTBOX_TABLE_NAME", "TableStreamArn": "OUTBOX_CHECK_STREAM_ARN",
             "EventBusName": "OUTBOX_EVENT_BUS_NAME", "QuarantineQueueUrl": "OUTBOX_QUARANTINE_QUEUE_URL",
             "OnFailureQueueUrl": "OUTBOX_ON_FAILURE_QUEUE_URL", "ExampleTargetQueueUrl": "OUTBOX_CHECK_TARGET_QUEUE_URL",
             "ClaimCheckBucketName": "OUTBOX_CLAIM_CHECK_BUCKET"}
    missing = sorted(set(names) - set(out))
    if missing:
        fail(f"stack {stack} has no outputs {missing} (it has {sorted(out)})")
    unexpected = sorted({"FunctionName", "EventSourceMappingId", "FunctionRoleArn"} & set(out))
    if unexpected:
        fail(f"RelayHost=none but the stack has outputs {unexpected}")
    for key, name in names.items():
        print(f"{name}={out[key]}")


def resources():
    table, bus = env("OUTBOX_TABLE_NAME"), env("OUTBOX_EVENT_BUS_NAME")
    target, quarantine, on_failure = (env("OUTBOX_CHECK_TARGET_QUEUE_URL"), env("OUTBOX_QUARANTINE_QUEUE_URL"),
                                      env("OUTBOX_ON_FAILURE_QUEUE_URL"))
    # The table: pk/sk, a NEW_IMAGE stream (the output's), TTL on ttl.
    t = ddb.describe_table(TableName=table)["Table"]
    keys = [(k["AttributeName"], k["KeyType"]) for k in t["KeySchema"]]
    if keys != [("pk", "HASH"), ("sk", "RANGE")]:
        fail(f"table keys {keys}")
    spec = t.get("StreamSpecification", {})
    if not spec.get("StreamEnabled") or spec.get("StreamViewType") != "NEW_IMAGE":
        fail(f"table stream {spec}")
    if t.get("LatestStreamArn") != env("OUTBOX_CHECK_STREAM_ARN"):
        fail(f"stream {t.get('LatestStreamArn')} is not the output's {env('OUTBOX_CHECK_STREAM_ARN')}")
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("AttributeName") != "ttl" or ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        fail(f"table TTL {ttl}")
    # An item put is read back from the stream with its new image (a foreign item: the relay skips it).
    probe = secrets.token_hex(4)
    ddb.put_item(TableName=table, Item={"pk": {"S": f"Check#{probe}"}, "sk": {"S": "PROBE"}})
    arn, seen, deadline = t["LatestStreamArn"], False, time.time() + 10
    while not seen and time.time() < deadline:
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for r in streams.get_records(ShardIterator=it, Limit=1000)["Records"]:
                image = r["dynamodb"].get("NewImage", {})
                seen |= r["eventName"] == "INSERT" and image.get("pk", {}).get("S") == f"Check#{probe}"
        if not seen:
            time.sleep(0.2)
    if not seen:
        fail("an item put in the table did not appear in its stream within 10 s")
    # The rule: the example source reaches the example queue; another source does not.
    entries = [{"EventBusName": bus, "Source": src, "DetailType": "OutboxCheckProbe",
                "Detail": json.dumps({"probe": probe, "source": src})}
               for src in ("com.example.not-matched", "com.example.orders")]
    put = events.put_events(Entries=entries)
    if put.get("FailedEntryCount"):
        fail(f"PutEvents to {bus}: {put['Entries']}")
    got, other = receive(target, 1, 10, lambda b: b.get("detail", {}).get("probe") == probe)
    if [b["source"] for b in got] != ["com.example.orders"] or other:
        fail(f"the example queue got {got} and {other}, not the one com.example.orders event")
    # The queues the relay writes to.
    for name, url in (("quarantine", quarantine), ("on-failure", on_failure)):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"probe": probe}))
        got, other = receive(url, 1, 5, lambda b: b.get("probe") == probe)
        if len(got) != 1 or other:
            fail(f"the {name} queue gave back {got} and {other}")
    # The claim-check bucket: SSE-S3 by default, and an object put and read back. (LocalStack's
    # CloudFormation does not apply the lifecycle rule; deploy-check checks it in the template.)
    s3, bucket = boto3.client("s3"), env("OUTBOX_CLAIM_CHECK_BUCKET")
    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    if [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in sse] != ["AES256"]:
        fail(f"claim-check bucket encryption {sse}")
    s3.put_object(Bucket=bucket, Key=f"check/{probe}.json", Body=b'{"probe":true}')
    if s3.get_object(Bucket=bucket, Key=f"check/{probe}.json")["Body"].read() != b'{"probe":true}':
        fail("S3 gave back another object")
    s3.delete_object(Bucket=bucket, Key=f"check/{probe}.json")
    print("table + NEW_IMAGE stream + TTL, bus -> rule -> example queue (and only its source), "
          "quarantine and on-failure queues, claim-check bucket: all as deployed")


def write(count):
    """Commits `count` outbox events as the writer does, then one poison item; prints the ids as JSON."""
    table, tag, ids = env("OUTBOX_TABLE_NAME"), secrets.token_hex(3), []
    for i in range(1, count + 1):
        ms = int(time.time() * 1000)
        eid, agg = uuid7(ms), f"{tag}-{i}"
        at = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        item = {"pk": {"S": f"Order#{agg}"}, "sk": {"S": f"OUTBOX#{1:020d}#{eid}"}, "outbox": {"S": "v1"},
                "ttl": {"N": str(ms // 1000 + 7 * 86400)}, "event_id": {"S": eid},
                "source": {"S": "com.example.orders"}, "event_type": {"S": "OrderPlaced"},
                "aggregate_type": {"S": "Order"}, "aggregate_id": {"S": agg}, "sequence": {"N": "1"},
                "occurred_at": {"S": at},
                "payload": {"S": json.dumps({"orderId": agg, "total": i}, separators=(",", ":"), sort_keys=True)}}
        order = {"pk": {"S": f"Order#{agg}"}, "sk": {"S": "ORDER"}, "status": {"S": "PLACED"}, "version": {"N": "1"}}
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": it, "ConditionExpression": "attribute_not_exists(pk)"}}
            for it in (order, item)])
        ids.append(eid)
    # Poison: an outbox item whose sequence is a string (as in dynamodb-malformed-outbox-item.json),
    # with a 300 KB payload, so that its quarantine message is over the queue's 256 KiB and goes
    # to the claim-check bucket.
    ms = int(time.time() * 1000)
    poison = uuid7(ms)
    ddb.put_item(TableName=table, Item={
        "pk": {"S": f"Order#{tag}-poison"}, "sk": {"S": f"OUTBOX#{2:020d}#{poison}"}, "outbox": {"S": "v1"},
        "event_id": {"S": poison}, "source": {"S": "com.example.orders"}, "event_type": {"S": "OrderPaid"},
        "aggregate_type": {"S": "Order"}, "aggregate_id": {"S": f"{tag}-poison"}, "sequence": {"S": "2"},
        "occurred_at": {"S": "2026-11-23T10:00:01.000Z"},
        "payload": {"S": json.dumps({"blob": "x" * (300 * 1024)})}})
    print(json.dumps({"events": ids, "poison": poison}))


def running(pid):
    """Is process `pid` (the relay; None: nothing to watch) still running?"""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited too.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def await_delivery(expected, quarantined, seconds, label, pid=None, min_claimed=0):
    """Waits until every id of `expected` is at the example queue and every id of `quarantined`
    in the quarantine queue (by the quarantine message's raw record or event); gives up at
    once if process `pid` (the relay) exits."""
    target, quarantine = env("OUTBOX_CHECK_TARGET_QUEUE_URL"), env("OUTBOX_QUARANTINE_QUEUE_URL")
    want, seen, duplicates, foreign = set(expected), set(), 0, 0
    deadline = time.time() + seconds
    while seen != want and time.time() < deadline and running(pid):
        got, other = receive(target, 1, 1, lambda b: b.get("detail", {}).get("id") in want)
        for body in got:
            eid = body["detail"]["id"]
            duplicates += eid in seen
            seen.add(eid)
        foreign += len(other)
    q_want, q_seen, reasons, claimed = set(quarantined), set(), [], 0
    while q_seen != q_want and time.time() < deadline + 10 and running(pid):
        got, _ = receive(quarantine, 1, 1)
        for body in got:
            check = body.get("claim_check")
            if check:
                # The message names the object holding the whole message.
                claimed += 1
                stored = boto3.client("s3").get_object(Bucket=check["bucket"], Key=check["key"])
                if stored.get("ServerSideEncryption") != "AES256":
                    fail(f"claim-checked object {check} is not stored with SSE-S3")
                body = json.loads(stored["Body"].read())
            text = (body.get("raw") or "") + json.dumps(body.get("event") or {})
            for eid in q_want:
                if eid in text:
                    q_seen.add(eid)
                    reasons.append(body.get("reason"))
    print(f"{label}: {len(seen)}/{len(want)} events at the example queue ({duplicates} duplicates, "
          f"{foreign} others), {len(q_seen)}/{len(q_want)} quarantined ({claimed} by claim-check): {reasons}")
    if not running(pid):
        fail(f"{label}: the relay (pid {pid}) exited")
    if seen != want:
        fail(f"{label}: {len(want - seen)} events never reached the example queue")
    if q_seen != q_want:
        fail(f"{label}: not quarantined: {sorted(q_want - q_seen)}")
    if claimed < min_claimed:
        fail(f"{label}: {claimed} quarantine messages by claim-check, expected {min_claimed}")
    if [r for r in reasons if "sequence" not in (r or "")]:
        fail(f"{label}: quarantined for another reason than its sequence: {reasons}")


def fixture_ids(path):
    """The fixture's outbox inserts: the well-formed ones (published) and those whose sequence
    is not a number (quarantined)."""
    published, poison = [], []
    for r in json.load(open(path, encoding="utf-8"))["Records"]:
        image = r.get("dynamodb", {}).get("NewImage", {})
        if r.get("eventName") != "INSERT" or image.get("outbox") != {"S": "v1"}:
            continue
        (published if "N" in image.get("sequence", {}) else poison).append(image["event_id"]["S"])
    return published, poison


command = sys.argv[1]
if command == "bucket":
    boto3.client("s3").create_bucket(Bucket=sys.argv[2])
elif command == "outputs":
    outputs(sys.argv[2])
elif command == "resources":
    resources()
elif command == "write":
    write(int(sys.argv[2]))
elif command == "await-relay":
    written = json.load(open(sys.argv[2], encoding="utf-8"))
    await_delivery(written["events"], [written["poison"]], 60, "standalone relay", int(sys.argv[3]), 1)
elif command == "await-invoke":
    published, poison = fixture_ids(sys.argv[2])
    await_delivery(published, poison, 20, "outbox invoke")
else:
    fail(f"unknown command {command}")
PY
}

helper() { "$SAM_VENV/bin/python" "$STATE_DIR/check.py" "$@"; }

# ---------------------------------------------------------------- steps

step() {
    local name=$1 t0
    shift
    t0=$(now)
    printf '\n==> %s\n' "$name" >&2
    "$@" || die "$name"
    log "ok: $name ($(elapsed "$t0") s)"
}

start_localstack() {
    local env_file
    env_file=$(OUTBOX_TOOLS_DIR=$TOOLS_DIR OUTBOX_LOCALSTACK_SERVICES=$SERVICES \
        "$SCRIPT_DIR/localstack.sh" start "$STATE_DIR/localstack") || return 1
    LOCALSTACK_STARTED=1
    # shellcheck disable=SC1090
    . "$env_file"
    log "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
}

deploy() {
    # A bucket for what `sam deploy` uploads, made directly: --resolve-s3 would deploy
    # SAM's managed stack first (~15 s more).
    helper bucket "$STACK-artifacts" || return 1
    # From the state dir: `sam deploy` leaves its files in the working directory. An
    # empty config file: the repository's samconfig.toml asks for --resolve-s3 and a
    # confirmation.
    printf 'version = 0.1\n' >"$STATE_DIR/samconfig.toml"
    (cd "$STATE_DIR" && "$SAM_VENV/bin/samlocal" deploy --config-file "$STATE_DIR/samconfig.toml" \
        --template-file "$TEMPLATE" --stack-name "$STACK" \
        --s3-bucket "$STACK-artifacts" --no-confirm-changeset --no-fail-on-empty-changeset --no-progressbar \
        --capabilities CAPABILITY_IAM \
        --parameter-overrides RelayHost=none TableDeletionProtection=false) >"$STATE_DIR/deploy.log" 2>&1 || {
        tail -n 40 "$STATE_DIR/deploy.log" >&2
        return 1
    }
    helper outputs "$STACK" >"$STATE_DIR/stack.env" || return 1
    set -a
    # shellcheck disable=SC1091
    . "$STATE_DIR/stack.env"
    set +a
    sed 's/^/  /' "$STATE_DIR/stack.env" >&2
}

RELAY_PID=
stop_relay() {
    local pid=$RELAY_PID i
    [[ -n $pid ]] || return 0
    RELAY_PID=
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; return; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "the relay (pid $pid) ignored TERM for 10 s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid"
}

standalone_relay() {
    "$OUTBOX" relay dynamodb --lease-table "$LEASE_TABLE" --create-lease-table --lease-seconds 10 \
        --on-failure-queue-url "$OUTBOX_ON_FAILURE_QUEUE_URL" </dev/null >"$STATE_DIR/relay.log" 2>&1 &
    RELAY_PID=$!
    helper write "$EVENTS" >"$STATE_DIR/written.json" || return 1
    log "committed $EVENTS events and 1 poison item to $OUTBOX_TABLE_NAME"
    local rc=0
    helper await-relay "$STATE_DIR/written.json" "$RELAY_PID" || rc=1
    if ! kill -0 "$RELAY_PID" 2>/dev/null; then
        local status=0
        stop_relay || status=$?
        log "the relay exited early (status $status):"
        tail -n 30 "$STATE_DIR/relay.log" >&2
        return 1
    fi
    local status=0
    stop_relay || status=$?
    if ((status != 0)); then
        log "the relay exited with status $status after TERM:"
        tail -n 30 "$STATE_DIR/relay.log" >&2
        rc=1
    elif ! grep -a 'relay stopped' "$STATE_DIR/relay.log" >&2; then
        log "the relay did not report how it stopped:"
        tail -n 30 "$STATE_DIR/relay.log" >&2
        rc=1
    fi
    return "$rc"
}

invoke_fixture() {
    local response
    response=$("$OUTBOX" invoke --event "$FIXTURE" 2>"$STATE_DIR/invoke.log") || {
        tail -n 30 "$STATE_DIR/invoke.log" >&2
        return 1
    }
    log "response: $response"
    [[ $response == '{"batchItemFailures":[]}' ]] || {
        log "expected {\"batchItemFailures\":[]}"
        tail -n 30 "$STATE_DIR/invoke.log" >&2
        return 1
    }
    helper await-invoke "$FIXTURE"
}

# ---------------------------------------------------------------- main

LOCALSTACK_STARTED=
STATE_DIR=
OK=
cleanup() {
    stop_relay || true
    if [[ -n $LOCALSTACK_STARTED ]]; then
        OUTBOX_TOOLS_DIR=$TOOLS_DIR "$SCRIPT_DIR/localstack.sh" stop "$STATE_DIR/localstack" || true
    fi
    if [[ -n $STATE_DIR ]]; then
        if [[ -n $OK ]]; then rm -rf "$STATE_DIR"; else log "logs kept in $STATE_DIR"; fi
    fi
}

# Only the standard AWS variables the env file sets may point clients anywhere: a
# service-specific AWS_ENDPOINT_URL_<SERVICE> would win over AWS_ENDPOINT_URL.
clear_environment() {
    local v
    for v in $(compgen -e); do
        case $v in
            AWS_* | OUTBOX_*) unset "$v" ;;
        esac
    done
    export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
    export SAM_CLI_TELEMETRY=0 SAM_CLI_POLL_DELAY=1 DISABLE_DEPRECATION_NOTICE=1
}

cmd_check() {
    local mode=$1 t0
    t0=$(now)
    if [[ $mode == check && ! -x $OUTBOX ]]; then
        die "no outbox binary at $OUTBOX: build it with 'cargo build -p outbox-cli --bin outbox' (or set OUTBOX_BIN)"
    fi
    [[ -f $FIXTURE ]] || die "no fixture $FIXTURE"
    step "install (cached in $TOOLS_DIR)" cmd_install
    clear_environment
    STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/outbox-localstack-check.XXXXXX")
    trap cleanup EXIT
    write_helper
    step "start LocalStack (host mode, 127.0.0.1)" start_localstack
    step "samlocal deploy template.yaml (RelayHost=none) as stack $STACK" deploy
    step "the deployed stack's wiring (boto3)" helper resources
    if [[ $mode == deploy ]]; then
        OK=1
        log "deploy checked in $(elapsed "$t0") s; the outbox steps (standalone relay, invoke) were NOT run"
        return 0
    fi
    step "standalone relay: $EVENTS events and 1 poison item through the stack" standalone_relay
    step "outbox invoke --event $(basename "$FIXTURE") against the stack" invoke_fixture
    OK=1
    log "all LocalStack checks passed in $(elapsed "$t0") s"
}

case ${1:-check} in
    install) cmd_install; log "installed ($TOOLS_DIR/localstack-venv, $SAM_VENV)" ;;
    check) cmd_check check ;;
    deploy) cmd_check deploy ;;
    *)
        echo "usage: $0 [check | deploy | install]" >&2
        exit 2
        ;;
esac
