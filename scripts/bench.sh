#!/usr/bin/env bash
# Every measurement behind docs/PERFORMANCE.md (not run in CI). It builds the
# release binaries, writes the event files, starts loopback EventBridge-compatible
# endpoints (one per latency), measures the Rust handler in-process, the real
# outbox-lambda binary under a loopback Lambda Runtime API, and the Python peer
# (bench/peers/) on the same files against the same endpoints, then prints a
# summary. Every raw figure is a JSON line in $OUT/results.jsonl.
#
#   scripts/bench.sh                  # handler, Lambda binary, Python peer
#   scripts/bench.sh --callgrind      # + instruction counts per record (valgrind), Rust and Python
#   scripts/bench.sh --criterion      # + cargo bench -p outbox-bench
#   scripts/bench.sh --e2e            # + the demo on the emulators (commit-to-delivery p50/p99)
#   scripts/bench.sh --all            # all of the above
#
# CARGO (default "cargo") is the cargo command, e.g. CARGO="flock /tmp/x.lock cargo".
# BEFORE=path/to/outbox-lambda measures a second build of the Lambda binary beside
# this one under the 128 MB CPU quota (the before/after table of PERFORMANCE.md).
# ITERATIONS (default 10) sets the measured runs per figure; LATENCIES (default
# "5 20 50") the endpoint latencies in ms for the wall-time bound. Wall-clock
# figures are medians; on a shared machine prefer the callgrind counts.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"

CALLGRIND=0 CRITERION=0 E2E=0
for arg in "$@"; do
    case "$arg" in
        --callgrind) CALLGRIND=1 ;;
        --criterion) CRITERION=1 ;;
        --e2e) E2E=1 ;;
        --all) CALLGRIND=1 CRITERION=1 E2E=1 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

CARGO=${CARGO:-cargo}
ITERATIONS=${ITERATIONS:-10}
LATENCIES=${LATENCIES:-"5 20 50"}
OUT=${OUT:-target/bench-results}
DATA=target/bench-data
RESULTS="$OUT/results.jsonl"
mkdir -p "$OUT"
: > "$RESULTS"

step() { printf '\n==> %s\n' "$*" >&2; }
record() { tee -a "$RESULTS"; }

step "machine"
{
    printf '{"mode":"machine","cpu":"%s","cores":%s,"kernel":"%s","rustc":"%s","python":"%s","load":"%s"}\n' \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" "$(uname -r)" \
        "$(rustc --version)" "$(python3 --version 2>&1)" "$(cut -d' ' -f1-3 /proc/loadavg)"
} | record

step "release build (outbox-lambda and the bench binaries)"
$CARGO build --release --quiet -p outbox-lambda -p outbox-bench --bins
BIN=target/release

step "event files"
"$BIN/gen-batch" --out "$DATA" >&2

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# Starts an endpoint with latency $1 ms; sets ENDPOINT.
start_endpoint() {
    local out
    out=$(mktemp)
    "$BIN/eventbridge-endpoint" --latency-ms "$1" > "$out" &
    PIDS+=($!)
    for _ in $(seq 50); do
        [[ -s "$out" ]] && break
        sleep 0.1
    done
    ENDPOINT=$(head -n1 "$out")
    rm -f "$out"
}

step "endpoints"
declare -A EP
for latency in 0 $LATENCIES; do
    start_endpoint "$latency"
    EP[$latency]=$ENDPOINT
    echo "latency ${latency} ms: $ENDPOINT" >&2
done

step "Rust handler, in-process, CPU per record (endpoint latency 0)"
for file in dynamodb-100x1k dynamodb-1000x1k dynamodb-10000x1k dynamodb-1000x16k dynamodb-6mb; do
    "$BIN/bench-handler" handler --event "$DATA/$file.json" --endpoint "${EP[0]}" \
        --iterations "$ITERATIONS" --latency-ms 0 | record
done

step "Rust handler, wall time against the latency bound (1,000 x 1 KB)"
for latency in $LATENCIES; do
    for concurrency in 1 4 8; do
        "$BIN/bench-handler" handler --event "$DATA/dynamodb-1000x1k.json" --endpoint "${EP[$latency]}" \
            --concurrency "$concurrency" --iterations "$ITERATIONS" --latency-ms "$latency" | record
    done
done

step "outbox-lambda binary: init, peak RSS (10,000-record and 6 MB batches)"
"$BIN/bench-handler" lambda --binary "$BIN/outbox-lambda" --endpoint "${EP[0]}" \
    --event "$DATA/dynamodb-10000xmin.json" --invocations 3 --starts 10 | record
"$BIN/bench-handler" lambda --binary "$BIN/outbox-lambda" --endpoint "${EP[0]}" \
    --event "$DATA/dynamodb-6mb.json" --invocations 3 --starts 3 | record
"$BIN/bench-handler" lambda --binary "$BIN/outbox-lambda" --endpoint "${EP[0]}" \
    --event "$DATA/dynamodb-1000x1k.json" --invocations 3 --starts 3 | record

step "under 128 MB's CPU share (cgroup quota 7,236 us per 100,000 us), 1,000 x 1 KB at 20 ms"
# Lambda gives a function CPU in proportion to its memory: 1,769 MB is one vCPU,
# so 128 MB is 7.2 % of a core. The binary (or the peer's interpreter) joins the
# group before exec; the Runtime API harness and the endpoint stay outside it.
QUOTA_GROUP=/sys/fs/cgroup/cpu/outbox-bench-128mb
if mkdir -p "$QUOTA_GROUP" 2>/dev/null && echo 100000 > "$QUOTA_GROUP/cpu.cfs_period_us" \
    && echo 7236 > "$QUOTA_GROUP/cpu.cfs_quota_us"; then
    trap 'cleanup; rmdir "$QUOTA_GROUP" 2>/dev/null || true' EXIT
    quota_wrapper() { # $1: binary, $2: wrapper path, $3: extra exports
        printf '#!/bin/sh\necho $$ > %s/tasks\n%s\nexec %s "$@"\n' "$QUOTA_GROUP" "${3:-}" "$1" > "$2"
        chmod +x "$2"
    }
    quota_wrapper "$REPO_DIR/$BIN/outbox-lambda" "$OUT/outbox-lambda-128mb"
    "$BIN/bench-handler" lambda --binary "$OUT/outbox-lambda-128mb" --endpoint "${EP[20]}" \
        --event "$DATA/dynamodb-1000x1k.json" --invocations "$ITERATIONS" --starts 10 \
        | sed 's/^{/{"label":"after","cpu_share":"128mb","latency_ms":20,/' | record
    if [[ -n ${BEFORE:-} ]]; then
        # The earlier build read its endpoints from its own variables.
        quota_wrapper "$BEFORE" "$OUT/before-128mb" \
            'export OUTBOX_EVENTBRIDGE_ENDPOINT=$AWS_ENDPOINT_URL OUTBOX_SQS_ENDPOINT=$AWS_ENDPOINT_URL'
        "$BIN/bench-handler" lambda --binary "$OUT/before-128mb" --endpoint "${EP[20]}" \
            --event "$DATA/dynamodb-1000x1k.json" --invocations "$ITERATIONS" --starts 10 \
            | sed 's/^{/{"label":"before","cpu_share":"128mb","latency_ms":20,/' | record
    fi
    sh -c "echo \$\$ > $QUOTA_GROUP/tasks && exec bench/peers/run-python-peer.sh --endpoint ${EP[20]} \
        --event $DATA/dynamodb-1000x1k.json --iterations $ITERATIONS --latency-ms 20 --concurrency 4" \
        | sed 's/^{/{"label":"peer","cpu_share":"128mb",/' | record
else
    echo "cannot make $QUOTA_GROUP (needs a writable cgroup v1 cpu controller): quota figures skipped" >&2
fi

step "Python peer (bench/peers): same files, same endpoints"
PEER=bench/peers/run-python-peer.sh
$PEER --endpoint "${EP[0]}" --startup 10 | record
for file in dynamodb-100x1k dynamodb-1000x1k dynamodb-1000x16k dynamodb-10000xmin dynamodb-6mb; do
    $PEER --endpoint "${EP[0]}" --event "$DATA/$file.json" --iterations "$ITERATIONS" --latency-ms 0 | record
done
for latency in $LATENCIES; do
    $PEER --endpoint "${EP[$latency]}" --event "$DATA/dynamodb-1000x1k.json" --iterations 3 \
        --latency-ms "$latency" | record
done

if [[ $CALLGRIND == 1 ]]; then
    step "callgrind: instructions per record (1,000 x 1 KB; runs of 1 and 3 batches after a warm-up, difference / 2,000)"
    instructions() {
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null \
            | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' | tail -n1
    }
    event="$DATA/dynamodb-1000x1k.json"
    r1=$(instructions "$BIN/bench-handler" handler --event "$event" --endpoint "${EP[0]}" --iterations 1)
    r3=$(instructions "$BIN/bench-handler" handler --event "$event" --endpoint "${EP[0]}" --iterations 3)
    VENV_PY=.tools/peer-python-venv/bin/python
    p1=$(instructions "$VENV_PY" bench/peers/python/run.py --event "$event" --endpoint "${EP[0]}" --iterations 1)
    p3=$(instructions "$VENV_PY" bench/peers/python/run.py --event "$event" --endpoint "${EP[0]}" --iterations 3)
    printf '{"mode":"callgrind","event":"dynamodb-1000x1k.json","rust_instructions_per_record":%s,"python_instructions_per_record":%s}\n' \
        "$(( (r3 - r1) / 2000 ))" "$(( (p3 - p1) / 2000 ))" | record
fi

step "binary size"
arm64=""
if rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu \
    && [[ -x .tools/cargo-lambda-venv/bin/cargo-lambda ]]; then
    PATH="$REPO_DIR/.tools/cargo-lambda-venv/bin:$PATH" $CARGO lambda build --release --arm64 -p outbox-lambda >&2
    arm64=$(stat -c %s target/lambda/outbox-lambda/bootstrap)
fi
printf '{"mode":"binary","x86_64_release_bytes":%s,"arm64_bootstrap_bytes":%s}\n' \
    "$(stat -c %s "$BIN/outbox-lambda")" "${arm64:-null}" | record

if [[ $CRITERION == 1 ]]; then
    step "criterion (cargo bench -p outbox-bench)"
    $CARGO bench -p outbox-bench 2>&1 | tee "$OUT/criterion.txt" >&2
fi

if [[ $E2E == 1 ]]; then
    step "end to end on the emulators (writer -> stream -> relay -> moto EventBridge -> SQS)"
    scripts/demo.sh --orders 200 2>&1 | tee "$OUT/demo.txt" | grep '^summary' | \
        python3 -c 'import json,sys; print(json.dumps({"mode":"e2e-demo","summary":sys.stdin.read().strip()}))' | record
fi

step "chart ($OUT/performance.svg; docs/performance.svg is the committed copy)"
python3 scripts/bench-chart.py "$RESULTS" "$OUT/performance.svg"

step "summary"
python3 - "$RESULTS" <<'EOF'
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def pick(mode, **kv):
    return [r for r in rows if r.get("mode") == mode and all(r.get(k) == v for k, v in kv.items())]

print("\nCPU per record (median, endpoint latency 0, handler only; JSON parse apart)")
print(f"{'event':24} {'Rust us':>9} {'Python us':>10} {'ratio':>7}")
for r in pick("handler", latency_ms=0.0, concurrency=4):
    p = pick("python-peer", event=r["event"], latency_ms=0.0)
    py = p[0]["cpu_us_per_record_median"] if p else float("nan")
    print(f"{r['event']:24} {r['cpu_us_per_record_median']:9.2f} {py:10.2f} {py / r['cpu_us_per_record_median']:7.1f}")

print("\nWall time, 1,000 x 1 KB, against the bound ceil(100 / concurrency) x latency")
for r in pick("handler", event="dynamodb-1000x1k.json"):
    if r["latency_ms"]:
        print(f"  Rust   latency {r['latency_ms']:4.0f} ms, concurrency {r['concurrency']}: "
              f"{r['wall_ms_median']:8.1f} ms / bound {r['bound_ms']:7.1f} ms = {r['wall_over_bound']:.3f}")
for r in pick("python-peer", event="dynamodb-1000x1k.json"):
    if r["latency_ms"] and not r.get("cpu_share"):
        print(f"  Python latency {r['latency_ms']:4.0f} ms, concurrency {r['concurrency']}: "
              f"{r['wall_ms_median']:8.1f} ms / bound {r['bound_ms']:7.1f} ms = {r['wall_over_bound']:.3f}")

print("\nUnder 128 MB's CPU share, 1,000 x 1 KB at 20 ms, concurrency 4 (bound 500 ms)")
for r in rows:
    if r.get("cpu_share") == "128mb" and r.get("mode") == "lambda":
        walls = sorted(r.get("invocation_wall_ms") or [])
        med = walls[len(walls) // 2] if walls else float("nan")
        print(f"  outbox-lambda ({r['label']}): invocation median {med:.1f} ms = {med / 500:.3f}x the bound, "
              f"init median {r['init_ms_median']:.1f} ms")
    if r.get("cpu_share") == "128mb" and r.get("mode") == "python-peer":
        print(f"  Python peer: {r['wall_ms_median']:.1f} ms = {r['wall_ms_median'] / 500:.3f}x the bound")

print("\nStart-up and memory")
for r in pick("lambda"):
    print(f"  outbox-lambda: init median {r['init_ms_median']:.1f} ms (min {r['init_ms_min']:.1f}, max {r['init_ms_max']:.1f}), "
          f"{r.get('event', '-')}: peak RSS {r.get('peak_rss_mib', float('nan')):.1f} MiB, "
          f"minor faults {r.get('process_minor_faults', '-')}, invocations {r.get('invocation_wall_ms')}")
for r in pick("python-peer-startup"):
    print(f"  Python peer: start-up median {r['init_ms_median']:.1f} ms, idle RSS {r['idle_peak_rss_mib_median']:.1f} MiB")
for r in pick("python-peer"):
    if r["latency_ms"] == 0.0:
        print(f"  Python peer {r['event']}: peak RSS {r['peak_rss_mib']:.1f} MiB")
for r in pick("binary"):
    print(f"  binary: x86-64 release {r['x86_64_release_bytes'] / 2**20:.2f} MiB, arm64 bootstrap "
          + (f"{r['arm64_bootstrap_bytes'] / 2**20:.2f} MiB" if r["arm64_bootstrap_bytes"] else "not built here"))
for r in pick("callgrind"):
    print(f"  callgrind instructions per record: Rust {r['rust_instructions_per_record']}, "
          f"Python {r['python_instructions_per_record']} ({r['python_instructions_per_record'] / r['rust_instructions_per_record']:.1f}x)")
for r in pick("e2e-demo"):
    print(f"  {r['summary']}")
EOF
