#!/usr/bin/env bash
# LocalStack for outbox-relay, run on the host (no Docker, no auth token), offline.
#
#   scripts/localstack.sh install            # venv + DynamoDB Local seed (idempotent)
#   scripts/localstack.sh start STATE_DIR    # start it, wait until it answers, write STATE_DIR/env
#   scripts/localstack.sh status STATE_DIR   # exit 0 iff it is running
#   scripts/localstack.sh stop STATE_DIR     # stop it and its children (DynamoDB Local), by pid
#
# What runs:
#   - localstack-core 2026.3.0 (PyPI) in a venv made with Python >= 3.13 (it does not
#     import on 3.11 or 3.12). The interpreter is OUTBOX_LOCALSTACK_PYTHON, else
#     python3.13+ on PATH, else the newest 3.13+ under pyenv; without one, `install`
#     fails and says what to install.
#   - its hypercorn gateway on 127.0.0.1 (a free port), serving $OUTBOX_LOCALSTACK_SERVICES
#     (default dynamodb,dynamodbstreams,events,sqs,s3) on that one port. The default
#     gateway server binds every interface whatever GATEWAY_LISTEN says: hypercorn does not.
#   - DynamoDB and DynamoDB Streams with LocalStack's v2 providers: DynamoDB Local, which
#     LocalStack starts on first use. It would download Java 21 and DynamoDB Local then; both
#     are seeded instead: the DynamoDB Local jar scripts/emulators.sh installs, and as
#     "Java 21" a shim over the machine's java (17+) that starts DynamoDB Local through
#     scripts/DynamoDbLocalLauncher.java, bound to 127.0.0.1 (the jar has no bind option).
#     The v1 streams provider would start kinesis-mock instead (all interfaces, and it
#     drops writes made in the first ~0.5 s after CreateTable).
#
# Cache: $OUTBOX_TOOLS_DIR (default <repo>/.tools): localstack-venv, localstack-java21 (the
# shim), and what scripts/emulators.sh installs (it is run if the jar or the launcher is
# missing). Network is only used by `install` (pip, npm), and only for what is missing.
#
# `start` prints the env file path on stdout (progress goes to stderr), so
#   env_file=$(scripts/localstack.sh start "$dir") && . "$env_file"
# works; the env file configures AWS SDKs and CLIs through their standard variables only:
# AWS_ENDPOINT_URL (the gateway, every service), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
# (test), AWS_REGION and AWS_DEFAULT_REGION (us-east-1). LocalStack runs in its own session
# with stdio on STATE_DIR/localstack.log and outlives the caller: callers should
#   trap 'scripts/localstack.sh stop "$dir"' EXIT
#
# Tunables (env): OUTBOX_TOOLS_DIR, OUTBOX_LOCALSTACK_PYTHON, OUTBOX_LOCALSTACK_SERVICES
# (comma-separated; add cloudformation,cloudwatch to deploy template.yaml with RelayHost=none),
# OUTBOX_LOCALSTACK_TIMEOUT (seconds, default 60).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
TOOLS_DIR=${OUTBOX_TOOLS_DIR:-$REPO_DIR/.tools}
export OUTBOX_TOOLS_DIR=$TOOLS_DIR   # emulators.sh installs into the same cache

LS_SPEC='localstack-core[runtime]==2026.3.0 cbor2<6 pyopenssl<25'
LS_VENV=$TOOLS_DIR/localstack-venv
LS_STAMP=$LS_VENV/.outbox-installed
JAVA_SHIM_DIR=$TOOLS_DIR/localstack-java21
# Laid out by scripts/emulators.sh install.
DDB_DIR=$TOOLS_DIR/dynamodb-local-10.3.0
LAUNCHER_DIR=$TOOLS_DIR/launcher
SERVICES=${OUTBOX_LOCALSTACK_SERVICES:-dynamodb,dynamodbstreams,events,sqs,s3}
TIMEOUT=${OUTBOX_LOCALSTACK_TIMEOUT:-60}
BIND_HOST=127.0.0.1
MIN_PYTHON=3.13
MARKER=localstack.runtime.main           # in LocalStack's command line
DDB_MARKER=DynamoDbLocalLauncher         # in DynamoDB Local's

log() { printf 'localstack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }

now() { # seconds with fraction where the shell can tell
    if [[ -n ${EPOCHREALTIME:-} ]]; then printf '%s' "${EPOCHREALTIME/,/.}"; else date +%s; fi
}
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- install

# Is $1 a Python interpreter >= MIN_PYTHON?
python_ok() {
    [[ -n $1 && -x $1 ]] && "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' 2>/dev/null
}

# Path of a Python >= 3.13, or dies naming what to install.
find_python() {
    local candidate root
    if [[ -n ${OUTBOX_LOCALSTACK_PYTHON:-} ]]; then
        python_ok "$OUTBOX_LOCALSTACK_PYTHON" \
            || die "OUTBOX_LOCALSTACK_PYTHON=$OUTBOX_LOCALSTACK_PYTHON is not a Python >= $MIN_PYTHON"
        printf '%s' "$OUTBOX_LOCALSTACK_PYTHON"
        return 0
    fi
    for candidate in python3.15 python3.14 python3.13 python3; do
        candidate=$(command -v "$candidate" 2>/dev/null) || continue
        if python_ok "$candidate"; then printf '%s' "$candidate"; return 0; fi
    done
    root=${PYENV_ROOT:-}
    [[ -n $root ]] || root=$(pyenv root 2>/dev/null) || root=$HOME/.pyenv
    # Newest first.
    while read -r candidate; do
        if python_ok "$candidate"; then printf '%s' "$candidate"; return 0; fi
    done < <(printf '%s\n' "$root"/versions/3.*/bin/python | sort -V -r)
    die "LocalStack host mode needs Python >= $MIN_PYTHON (localstack-core 2026.3.0 does not import on \
3.11 or 3.12) and none was found (looked at python3.13+ on PATH and $root/versions). Install one: \
'pyenv install 3.13', or Debian's 'apt-get install python3.13 python3.13-venv' where available; \
or set OUTBOX_LOCALSTACK_PYTHON to its path"
}

install_venv() {
    if [[ -x $LS_VENV/bin/python && -f $LS_STAMP && $(<"$LS_STAMP") == "$LS_SPEC" ]]; then
        return 0
    fi
    local python
    python=$(find_python)
    if ! python_ok "$LS_VENV/bin/python"; then
        log "creating venv $LS_VENV with $python ($("$python" --version 2>&1))"
        rm -rf "$LS_VENV"
        "$python" -m venv "$LS_VENV" || die "$python -m venv failed"
    fi
    log "pip install $LS_SPEC into $LS_VENV"
    # cbor2<6: localstack imports cbor2._decoder, gone in cbor2 6. pyopenssl<25: it calls
    # X509.add_extensions, removed in pyOpenSSL 25. --no-compile: a third of the install time;
    # Python compiles (and caches) what LocalStack imports on its first start instead.
    # shellcheck disable=SC2086 # the spec is a list of requirements
    if ! "$LS_VENV/bin/python" -m pip install --no-compile --disable-pip-version-check -q $LS_SPEC \
        >"$TOOLS_DIR/localstack-pip.log" 2>&1; then
        tail -n 20 "$TOOLS_DIR/localstack-pip.log" >&2 || true
        die "pip install $LS_SPEC failed"
    fi
    "$LS_VENV/bin/python" -c 'import localstack.runtime.main, hypercorn' \
        || die "localstack-core installed but localstack.runtime.main does not import"
    printf '%s' "$LS_SPEC" >"$LS_STAMP"
}

# Directory holding DynamoDBLocal.jar (empty if none).
ddb_jar_dir() {
    local jar
    [[ -d $DDB_DIR ]] || return 0
    jar=$(find "$DDB_DIR" -name DynamoDBLocal.jar -type f -print 2>/dev/null | head -n 1)
    [[ -n $jar ]] && dirname "$jar"
    return 0
}

install_dynamodb_local() {
    if [[ -z $(ddb_jar_dir) || ! -f $LAUNCHER_DIR/DynamoDbLocalLauncher.class \
        || $SCRIPT_DIR/DynamoDbLocalLauncher.java -nt $LAUNCHER_DIR/DynamoDbLocalLauncher.class ]]; then
        log "DynamoDB Local or its launcher is missing: running scripts/emulators.sh install"
        "$SCRIPT_DIR/emulators.sh" install
    fi
    [[ -n $(ddb_jar_dir) ]] || die "no DynamoDBLocal.jar under $DDB_DIR after scripts/emulators.sh install"
    [[ -f $LAUNCHER_DIR/DynamoDbLocalLauncher.class ]] || die "no launcher in $LAUNCHER_DIR"
}

# "Java 21" for LocalStack: LocalStack runs
#   <lib>/java/21/bin/java [jvm options] -javaagent:<loader> ... -jar DynamoDBLocal.jar [args]
# The shim drops the agent (LocalStack's patch loader, which it would download), and runs
# DynamoDB Local through the project's launcher (bound to 127.0.0.1, telemetry off) on the
# machine's java. With OUTBOX_LOCALSTACK_STATE set (by `start`), it writes its pid (the JVM's,
# after exec) there for `stop`, and keeps the JVM's temporary files there.
install_java_shim() {
    local real stamp
    need java "a Java 17+ runtime runs DynamoDB Local"
    real=$(readlink -f "$(command -v java)")
    stamp="$real $LAUNCHER_DIR"
    if [[ -x $JAVA_SHIM_DIR/bin/java && -f $JAVA_SHIM_DIR/.outbox-installed \
        && $(<"$JAVA_SHIM_DIR/.outbox-installed") == "$stamp" ]]; then
        return 0
    fi
    log "writing the DynamoDB Local java shim into $JAVA_SHIM_DIR"
    rm -rf "$JAVA_SHIM_DIR"
    mkdir -p "$JAVA_SHIM_DIR/bin"
    cat >"$JAVA_SHIM_DIR/bin/java" <<EOF
#!/usr/bin/env bash
# Written by scripts/localstack.sh: LocalStack's "Java 21", running DynamoDB Local through
# the project's launcher on $real, bound to $BIND_HOST.
set -euo pipefail
real='$real'
launcher='$LAUNCHER_DIR'
opts=(-XX:-UsePerfData -Djava.net.preferIPv4Stack=true -Doutbox.dynamodb.bindHost=$BIND_HOST)
state=\${OUTBOX_LOCALSTACK_STATE:-}
if [[ -n \$state ]]; then mkdir -p "\$state/java-tmp"; opts+=("-Djava.io.tmpdir=\$state/java-tmp"); fi
while ((\$#)); do
    case \$1 in
        -javaagent:*) shift ;;
        -jar)
            jar=\$2
            shift 2
            telemetry=-disableTelemetry
            for a in "\$@"; do [[ \$a == -disableTelemetry ]] && telemetry=; done
            [[ -n \$state ]] && echo \$\$ >"\$state/dynamodb.pid"
            exec "\$real" "\${opts[@]}" -cp "\$launcher:\$jar" DynamoDbLocalLauncher "\$@" \$telemetry
            ;;
        *) opts+=("\$1"); shift ;;
    esac
done
exec "\$real" "\${opts[@]}"
EOF
    chmod 755 "$JAVA_SHIM_DIR/bin/java"
    printf '%s' "$stamp" >"$JAVA_SHIM_DIR/.outbox-installed"
}

cmd_install() {
    mkdir -p "$TOOLS_DIR"
    # One installer at a time (parallel jobs may all call start).
    exec 9>"$TOOLS_DIR/.localstack-install.lock"
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    install_venv
    install_dynamodb_local
    install_java_shim
    exec 9>&-
}

# ---------------------------------------------------------------- processes

read_pid() { if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi; }

cmdline_of() { # the command line of pid $1, or fails
    if [[ -r /proc/$1/cmdline ]]; then
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
    else
        ps -p "$1" -o args= 2>/dev/null
    fi
}

# Is pid alive and still the process we started (guards against pid reuse)?
is_ours() {
    local pid=$1 marker=$2 args
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    args=$(cmdline_of "$pid") || return 1
    [[ $args == *"$marker"* ]]
}

# Every descendant of pid $1 as "pid<TAB>command line" lines.
descendants() {
    local -a queue=("$1")
    local parent pid ppid
    local table
    table=$(ps -e -o pid=,ppid= 2>/dev/null) || return 0
    while ((${#queue[@]})); do
        parent=${queue[0]}
        queue=("${queue[@]:1}")
        while read -r pid ppid; do
            if [[ $ppid == "$parent" ]]; then
                printf '%s\t%s\n' "$pid" "$(cmdline_of "$pid" || true)"
                queue+=("$pid")
            fi
        done <<<"$table"
    done
}

free_port() {
    python3 - "$BIND_HOST" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
s.close()
EOF
}

# Starts LocalStack on $1 in its own session, stdio on STATE_DIR/localstack.log. The child
# writes its own pid, then execs, so the pid is right whether or not setsid forked.
launch() {
    local port=$1 pidfile=$STATE_DIR/localstack.pid logf=$STATE_DIR/localstack.log
    rm -f "$pidfile" "$STATE_DIR/dynamodb.pid"
    rm -rf "${STATE_DIR:?}/fs" "${STATE_DIR:?}/home" "${STATE_DIR:?}/java-tmp"
    # Where LocalStack looks for installed packages: the seeds.
    local lib=$STATE_DIR/fs/var/lib/localstack/lib
    mkdir -p "$lib/dynamodb-local" "$lib/java" "$STATE_DIR/home"
    ln -s "$(ddb_jar_dir)" "$lib/dynamodb-local/2"
    ln -s "$JAVA_SHIM_DIR" "$lib/java/21"
    local -a environment=(
        GATEWAY_SERVER=hypercorn
        "GATEWAY_LISTEN=$BIND_HOST:$port"
        "LOCALSTACK_HOST=$BIND_HOST:$port"
        DNS_ADDRESS=0
        SKIP_SSL_CERT_DOWNLOAD=1
        DISABLE_EVENTS=1
        OVERRIDE_IN_DOCKER=0
        "FILESYSTEM_ROOT=$STATE_DIR/fs"
        "HOME=$STATE_DIR/home"
        "SERVICES=$SERVICES"
        PROVIDER_OVERRIDE_DYNAMODB=v2
        PROVIDER_OVERRIDE_DYNAMODBSTREAMS=v2
        DYNAMODB_IN_MEMORY=1
        SQS_ENDPOINT_STRATEGY=path
        "OUTBOX_LOCALSTACK_STATE=$STATE_DIR"
    )
    local -a detach=()
    if command -v setsid >/dev/null 2>&1; then detach=(setsid); else detach=(nohup); fi
    # The wrapper drops the caller's endpoint variables (LocalStack's own clients must not
    # follow them) and closes any inherited descriptor above 2.
    # shellcheck disable=SC2016 # expanded by the inner bash
    (cd "$STATE_DIR" && exec env "${environment[@]}" "${detach[@]}" bash -c '
        echo $$ >"$0"
        for v in $(compgen -e); do
            case $v in AWS_ENDPOINT_URL*|AWS_PROFILE|AWS_CONFIG_FILE|AWS_SHARED_CREDENTIALS_FILE) unset "$v" ;; esac
        done
        if [ -d /proc/$$/fd ]; then
            for f in /proc/$$/fd/*; do
                n=${f##*/}
                if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null || true; fi
            done
        fi
        exec "$@"' "$pidfile" "$LS_VENV/bin/python" -m localstack.runtime.main) </dev/null >"$logf" 2>&1 &
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $pidfile ]] && return 0
        sleep 0.02
    done
    die "launcher did not write $pidfile"
}

print_tail() {
    log "---- last lines of $STATE_DIR/localstack.log ----"
    tail -n 40 "$STATE_DIR/localstack.log" >&2 2>/dev/null || true
    log "----"
}

# A signed DynamoDB call through the gateway: its HTTP status (000 if nothing answers).
# The first one makes LocalStack start DynamoDB Local.
dynamodb_list_tables() {
    curl -s -o "$STATE_DIR/probe.out" -w '%{http_code}' --max-time "$1" -X POST \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x' \
        --data '{}' "http://$BIND_HOST:$2/" 2>/dev/null || true
}

# TERM the pids given as "pid<TAB>command line" lines, wait up to $1 s, then KILL; a pid
# whose command line changed (reused) is left alone.
terminate() {
    local seconds=$1 line pid i
    shift
    local -a pending=()
    for line in "$@"; do
        pid=${line%%$'\t'*}
        if kill -0 "$pid" 2>/dev/null && [[ $(cmdline_of "$pid" || true) == "${line#*$'\t'}" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
        else
            continue
        fi
        pending+=("$line")
    done
    local -a left
    for ((i = 0; i < seconds * 10 && ${#pending[@]} > 0; i++)); do
        sleep 0.1
        left=()
        for line in "${pending[@]}"; do
            pid=${line%%$'\t'*}
            kill -0 "$pid" 2>/dev/null && [[ $(cmdline_of "$pid" || true) == "${line#*$'\t'}" ]] && left+=("$line")
        done
        pending=("${left[@]+"${left[@]}"}")
    done
    for line in "${pending[@]+"${pending[@]}"}"; do
        log "pid ${line%%$'\t'*} (${line#*$'\t'}) ignored TERM for $seconds s; sending KILL"
        kill -KILL "${line%%$'\t'*}" 2>/dev/null || true
    done
}

# Processes whose command line names this state dir and $1: what LocalStack started for
# this run, however it was started (it restarts DynamoDB Local when that dies), as
# "pid<TAB>command line" lines.
started_here() {
    local f pid args
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        args=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
        [[ $args == *"$STATE_DIR/"* && $args == *"$1"* ]] && printf '%s\t%s\n' "$pid" "$args"
    done
    return 0
}

# LocalStack (TERM, then KILL after 10 s: its shutdown hangs now and then), then what it
# started that outlived it: DynamoDB Local at times.
stop_all() {
    local main line
    main=$(read_pid "$STATE_DIR/localstack.pid")
    local -a children=()
    if is_ours "$main" "$MARKER"; then
        while IFS= read -r line; do
            [[ -n $line ]] && children+=("$line")
        done < <(descendants "$main")
        terminate 10 "$main"$'\t'"$(cmdline_of "$main")"
    elif [[ -n $main ]]; then
        log "pid $main not running (or not LocalStack); nothing to stop"
    fi
    if [[ -d /proc/self ]]; then
        while IFS= read -r line; do
            [[ -n $line ]] && children+=("$line")
        done < <(started_here "$DDB_MARKER")
    fi
    local -A seen=()
    local -a left=()
    for line in "${children[@]+"${children[@]}"}"; do
        [[ -n ${seen[${line%%$'\t'*}]:-} ]] && continue
        seen[${line%%$'\t'*}]=1
        kill -0 "${line%%$'\t'*}" 2>/dev/null || continue
        log "pid ${line%%$'\t'*} (${line#*$'\t'}) outlived LocalStack; stopping it"
        left+=("$line")
    done
    terminate 10 "${left[@]+"${left[@]}"}"
    rm -f "$STATE_DIR/localstack.pid" "$STATE_DIR/dynamodb.pid" "$STATE_DIR/localstack.port" "$STATE_DIR/health.json" "$STATE_DIR/env"
}

# ---------------------------------------------------------------- commands

set_state_dir() {
    [[ -n ${1:-} ]] || die "usage: $0 $CMD STATE_DIR"
    mkdir -p "$1"
    STATE_DIR=$(cd "$1" && pwd)
}

cmd_start() {
    set_state_dir "${1:-}"
    need curl "used to check that LocalStack answers"
    need python3 "used to pick a free port"
    local pid
    pid=$(read_pid "$STATE_DIR/localstack.pid")
    if is_ours "$pid" "$MARKER"; then
        die "LocalStack already running in $STATE_DIR (pid $pid); run '$0 stop $STATE_DIR' first"
    fi
    cmd_install

    local t0 port tries=1 code
    t0=$(now)
    port=$(free_port)
    launch "$port"
    local deadline
    deadline=$(awk -v a="$(now)" -v t="$TIMEOUT" 'BEGIN { printf "%d", a + t }')
    while :; do
        # Its health check answers once the gateway serves; the pid check keeps a foreign
        # server that grabbed the port from passing for ours.
        pid=$(read_pid "$STATE_DIR/localstack.pid")
        if ! is_ours "$pid" "$MARKER"; then
            if ((tries < 3)) && grep -qiE 'address already in use|errno 98' "$STATE_DIR/localstack.log" 2>/dev/null; then
                log "port $port was taken; retrying on another"
                port=$(free_port)
                tries=$((tries + 1))
                launch "$port"
                continue
            fi
            print_tail
            stop_all
            die "LocalStack exited before answering"
        fi
        code=$(curl -s -o "$STATE_DIR/health.json" -w '%{http_code}' --max-time 2 \
            "http://$BIND_HOST:$port/_localstack/health" 2>/dev/null || true)
        [[ $code == 200 ]] && grep -q '"services"' "$STATE_DIR/health.json" && break
        if (($(date +%s) >= deadline)); then
            log "LocalStack did not answer within $TIMEOUT s"
            print_tail
            stop_all
            die "LocalStack did not become ready"
        fi
        sleep 0.1
    done
    log "gateway ready on http://$BIND_HOST:$port after $(elapsed "$t0") s"

    # DynamoDB Local starts on first use: start it now, so that a broken seed fails here.
    if [[ ,$SERVICES, == *,dynamodb,* ]]; then
        code=$(dynamodb_list_tables 30 "$port")
        if [[ $code != 200 ]]; then
            log "DynamoDB ListTables through LocalStack answered HTTP $code: $(head -c 300 "$STATE_DIR/probe.out" 2>/dev/null)"
            print_tail
            stop_all
            die "DynamoDB did not start in LocalStack"
        fi
        log "DynamoDB (DynamoDB Local, pid $(read_pid "$STATE_DIR/dynamodb.pid")) ready after $(elapsed "$t0") s"
    fi
    rm -f "$STATE_DIR/probe.out"

    printf '%s\n' "$port" >"$STATE_DIR/localstack.port"
    local tmp=$STATE_DIR/.env.tmp
    cat >"$tmp" <<EOF
export AWS_ENDPOINT_URL=http://$BIND_HOST:$port
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
EOF
    mv -f "$tmp" "$STATE_DIR/env"
    log "ready after $(elapsed "$t0") s (services $SERVICES); env file:"
    printf '%s\n' "$STATE_DIR/env"
}

cmd_stop() {
    set_state_dir "${1:-}"
    stop_all
    log "stopped (state dir $STATE_DIR)"
}

cmd_status() {
    set_state_dir "${1:-}"
    local pid
    pid=$(read_pid "$STATE_DIR/localstack.pid")
    if is_ours "$pid" "$MARKER"; then
        echo "localstack: running (pid $pid, http://$BIND_HOST:$(cat "$STATE_DIR/localstack.port" 2>/dev/null || echo '?'))"
        [[ -f $STATE_DIR/env ]] && echo "env: $STATE_DIR/env"
        return 0
    fi
    echo "localstack: not running"
    return 3
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
