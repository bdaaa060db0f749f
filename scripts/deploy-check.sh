#!/usr/bin/env bash
# Offline checks of the deployment templates (no AWS account, no Docker):
#
#   1. `sam validate --lint` of template.yaml;
#   2. template.yaml expanded to CloudFormation with aws-sam-translator, then
#      `cfn-lint` on the expansion (it checks what SAM passes through, e.g. the
#      event source mapping's enums): no finding allowed;
#   3. the CDK app (infra/cdk) compiled with tsc and synthesized with `cdk synth`
#      (a placeholder `bootstrap` stands in for the Lambda build), `cfn-lint` on it;
#   4. the CDK assertion tests (node:test);
#   5. the relay's non-negotiable settings on both templates (ReportBatchItemFailures,
#      TRIM_HORIZON, bisect, bounded retries, ParallelizationFactor 1, the outbox filter,
#      the on-failure destination, no IAM wildcard), and the SAM template (at its
#      parameter defaults) compared with the CDK stack: same resources, same settings;
#   6. `cargo test -p outbox-lambda --test deployment_env`: both templates set exactly
#      the environment variables the binary reads (and ReportBatchItemFailures).
#
# Every check runs even if an earlier one failed (unless it needs that one's output);
# the script exits 1 if any failed, listing them.
#
#   scripts/deploy-check.sh            # install what is missing, then check
#   scripts/deploy-check.sh install    # install only
#
# Cache: $OUTBOX_TOOLS_DIR (default <repo>/.tools)/deploy-venv holds aws-sam-cli,
# aws-sam-translator and cfn-lint (pinned); infra/cdk/node_modules comes from
# `npm ci` (infra/cdk/package-lock.json), redone only when the lock file changes.
# Network is only used to install. OUTBOX_CARGO overrides the cargo command
# (e.g. "flock /tmp/lock cargo"). Exits non-zero on any failure.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
TOOLS_DIR=${OUTBOX_TOOLS_DIR:-$REPO_DIR/.tools}
CDK_DIR=$REPO_DIR/infra/cdk
TEMPLATE=$REPO_DIR/template.yaml

DEPLOY_SPEC='aws-sam-cli==1.170.0 aws-sam-translator==1.115.0 cfn-lint==1.58.0'
DEPLOY_VENV=$TOOLS_DIR/deploy-venv
DEPLOY_STAMP=$DEPLOY_VENV/.outbox-installed
NPM_STAMP=$CDK_DIR/node_modules/.outbox-lock-sha256

# No telemetry, no update checks, no credentials or instance metadata lookups.
export SAM_CLI_TELEMETRY=0
export CDK_DISABLE_CLI_TELEMETRY=true
export CDK_DISABLE_VERSION_CHECK=true
export AWS_EC2_METADATA_DISABLED=true
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1

log() { printf 'deploy-check: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }
now() { if [[ -n ${EPOCHREALTIME:-} ]]; then printf '%s' "${EPOCHREALTIME/,/.}"; else date +%s; fi; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- install

install_venv() {
    if [[ -x $DEPLOY_VENV/bin/sam && -f $DEPLOY_STAMP && $(<"$DEPLOY_STAMP") == "$DEPLOY_SPEC" ]]; then
        return 0
    fi
    need python3 "to create the SAM/cfn-lint venv"
    if [[ ! -x $DEPLOY_VENV/bin/python ]]; then
        log "creating venv $DEPLOY_VENV"
        rm -rf "$DEPLOY_VENV"
        python3 -m venv "$DEPLOY_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    log "pip install $DEPLOY_SPEC into $DEPLOY_VENV"
    # shellcheck disable=SC2086 # the spec is a list of requirements
    if ! "$DEPLOY_VENV/bin/python" -m pip install --disable-pip-version-check -q $DEPLOY_SPEC \
        >"$TOOLS_DIR/deploy-pip.log" 2>&1; then
        tail -n 20 "$TOOLS_DIR/deploy-pip.log" >&2 || true
        die "pip install failed"
    fi
    "$DEPLOY_VENV/bin/sam" --version >/dev/null || die "aws-sam-cli installed but sam does not run"
    printf '%s' "$DEPLOY_SPEC" >"$DEPLOY_STAMP"
}

install_node_modules() {
    need npm "Node 20+ and npm run the CDK app"
    local sum
    sum=$(sha256sum "$CDK_DIR/package-lock.json" | cut -d' ' -f1)
    if [[ -f $NPM_STAMP && $(<"$NPM_STAMP") == "$sum" && -x $CDK_DIR/node_modules/.bin/cdk ]]; then
        return 0
    fi
    log "npm ci in infra/cdk"
    if ! (cd "$CDK_DIR" && npm ci --no-audit --no-fund >"$TOOLS_DIR/deploy-npm.log" 2>&1); then
        tail -n 20 "$TOOLS_DIR/deploy-npm.log" >&2 || true
        die "npm ci failed"
    fi
    printf '%s' "$sum" >"$NPM_STAMP"
}

cmd_install() {
    mkdir -p "$TOOLS_DIR"
    exec 8>"$TOOLS_DIR/.deploy-install.lock"
    if command -v flock >/dev/null 2>&1; then flock 8; fi
    install_venv
    install_node_modules
    exec 8>&-
}

# ---------------------------------------------------------------- checks

# template.yaml -> CloudFormation (JSON), the way `sam validate` runs the
# translator: the local CodeUri replaced by an S3 location, fixed pseudo
# parameters, no managed-policy lookup (the template names none).
expand_sam() {
    "$DEPLOY_VENV/bin/python" - "$TEMPLATE" "$1" <<'PY'
import json
import sys

import boto3
from samcli.yamlhelper import yaml_parse
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

source, destination = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as f:
    template = yaml_parse(f.read())
for resource in template.get("Resources", {}).values():
    properties = resource.get("Properties", {})
    if resource.get("Type") == "AWS::Serverless::Function" and isinstance(properties.get("CodeUri"), str):
        properties["CodeUri"] = "s3://deploy-check-placeholder/outbox-lambda.zip"
translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1"))
pseudo = {"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012"}
try:
    expanded = translator.translate(template, parameter_values=pseudo, get_managed_policy_map=lambda: {})
except InvalidDocumentException as e:
    for cause in e.causes:
        print(f"aws-sam-translator: {cause.message}", file=sys.stderr)
    sys.exit(1)
with open(destination, "w", encoding="utf-8") as f:
    json.dump(expanded, f, indent=2, sort_keys=True)
print(f"{len(expanded['Resources'])} resources")
PY
}

# The relay's settings on both templates, and SAM (at its parameter defaults)
# against CDK. Prints every difference; exits 1 if there is any.
compare_templates() {
    "$DEPLOY_VENV/bin/python" - "$1" "$2" <<'PY'
import json
import re
import sys

sam = json.load(open(sys.argv[1], encoding="utf-8"))
cdk = json.load(open(sys.argv[2], encoding="utf-8"))
problems = []
NO_VALUE = object()

def sam_resolver(template):
    """Resolves SAM intrinsics at the parameter defaults; resources become their type."""
    params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    params.update({"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012"})
    conditions = template.get("Conditions", {})
    return make_resolver(template["Resources"], params, conditions)

def make_resolver(resources, params, conditions):
    def condition(name):
        return truth(conditions[name])

    def truth(node):
        (fn, arg), = node.items()
        if fn == "Fn::Equals":
            return resolve(arg[0]) == resolve(arg[1])
        if fn == "Fn::Not":
            return not truth(arg[0])
        if fn == "Fn::And":
            return all(truth(a) for a in arg)
        if fn == "Fn::Or":
            return any(truth(a) for a in arg)
        if fn == "Condition":
            return condition(arg)
        raise ValueError(f"unknown condition function {fn}")

    def resolve(node):
        if isinstance(node, list):
            return [r for r in (resolve(n) for n in node) if r is not NO_VALUE]
        if not isinstance(node, dict):
            return normalize(node)
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                if arg == "AWS::NoValue":
                    return NO_VALUE
                if arg in params:
                    return normalize(params[arg])
                return f"Ref {resources[arg]['Type']}"
            if fn == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return f"GetAtt {resources[name]['Type']}.{attribute}"
            if fn == "Fn::If":
                return resolve(arg[1] if condition(arg[0]) else arg[2])
            if fn == "Fn::Sub" and isinstance(arg, str):
                def sub(m):
                    key = m.group(1)
                    if key in params:
                        return params[key]
                    return "${" + key + "}"
                return normalize(re.sub(r"\$\{([^}]+)\}", sub, arg))
        out = {}
        for k, v in node.items():
            r = resolve(v)
            if r is not NO_VALUE:
                out[k] = r
        return out

    return resolve

def normalize(value):
    if isinstance(value, str):
        if re.fullmatch(r"-?[0-9]+", value):
            return int(value)
        if value in ("true", "false"):
            return value == "true"
    return value

resolve_sam = sam_resolver(sam)
resolve_cdk = make_resolver(cdk["Resources"], {}, cdk.get("Conditions", {}))

def of_type(template, resolve, type_):
    return [
        (name, resolve(r.get("Properties", {})))
        for name, r in sorted(template["Resources"].items())
        if r["Type"] == type_ and ("Condition" not in r or resolve({"Fn::If": [r["Condition"], True, False]}))
    ]

def only(template, resolve, type_, label):
    found = of_type(template, resolve, type_)
    if len(found) != 1:
        problems.append(f"{label}: expected one {type_}, found {len(found)}")
        return {}
    return found[0][1]

# ---- the relay's settings, on each template
EXPECTED_PATTERN = {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"outbox": {"S": ["v1"]}}}}
for label, template, resolve in (("SAM", sam, resolve_sam), ("CDK", cdk, resolve_cdk)):
    esm = only(template, resolve, "AWS::Lambda::EventSourceMapping", label)
    def expect(key, ok, why):
        if not ok(esm.get(key)):
            problems.append(f"{label}: event source mapping {key} = {esm.get(key)!r}: {why}")
    expect("FunctionResponseTypes", lambda v: v == ["ReportBatchItemFailures"],
           "must be [ReportBatchItemFailures] (the handler reports partial batch failures)")
    expect("StartingPosition", lambda v: v == "TRIM_HORIZON", "must be TRIM_HORIZON")
    expect("BisectBatchOnFunctionError", lambda v: v is True, "must be true")
    expect("ParallelizationFactor", lambda v: v == 1, "must be 1 (per-aggregate order)")
    expect("MaximumRetryAttempts", lambda v: isinstance(v, int) and 0 <= v <= 10000, "must be bounded (0..10000)")
    expect("MaximumRecordAgeInSeconds", lambda v: isinstance(v, int) and 60 <= v <= 86400,
           "must be bounded (60..86400)")
    expect("DestinationConfig", lambda v: (v or {}).get("OnFailure", {}).get("Destination") == "GetAtt AWS::SQS::Queue.Arn",
           "must send to an SQS on-failure queue")
    filters = (esm.get("FilterCriteria") or {}).get("Filters") or []
    patterns = [json.loads(f["Pattern"]) for f in filters if isinstance(f.get("Pattern"), str)]
    if patterns != [EXPECTED_PATTERN]:
        problems.append(f"{label}: filter {patterns} is not [{EXPECTED_PATTERN}]")
    if '"*"' in json.dumps([r for r in template["Resources"].values() if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::Role")]):
        problems.append(f"{label}: an IAM policy names the resource *")

# ---- SAM (defaults) against CDK
def differences(a, b, path):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: SAM {json.dumps(a, sort_keys=True)} / CDK {json.dumps(b, sort_keys=True)}"

def compare(what, a, b):
    for d in differences(a, b, what):
        problems.append(f"SAM and CDK differ: {d}")

def types(template, resolve):
    counts = {}
    for name, r in template["Resources"].items():
        if r["Type"] in ("AWS::CDK::Metadata", "AWS::IAM::Policy"):
            continue
        if "Condition" in r and not resolve({"Fn::If": [r["Condition"], True, False]}):
            continue
        counts[r["Type"]] = counts.get(r["Type"], 0) + 1
    return counts

compare("resource types", types(sam, resolve_sam), types(cdk, resolve_cdk))
for type_, drop in (
    ("AWS::Lambda::EventSourceMapping", ()),
    ("AWS::DynamoDB::Table", ()),
    ("AWS::Logs::LogGroup", ()),
    ("AWS::Lambda::Function", ("Code", "Description", "Tags")),
):
    a = only(sam, resolve_sam, type_, "SAM")
    b = only(cdk, resolve_cdk, type_, "CDK")
    for key in drop:
        a.pop(key, None)
        b.pop(key, None)
    if type_ == "AWS::Lambda::EventSourceMapping":
        for side in (a, b):
            side["FilterCriteria"] = [json.loads(f["Pattern"]) for f in side.get("FilterCriteria", {}).get("Filters", [])]
    compare(type_, a, b)

def sorted_list(items):
    return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))

compare("queues", sorted_list(p for _, p in of_type(sam, resolve_sam, "AWS::SQS::Queue")),
        sorted_list(p for _, p in of_type(cdk, resolve_cdk, "AWS::SQS::Queue")))
compare("alarms", sorted_list(p for _, p in of_type(sam, resolve_sam, "AWS::CloudWatch::Alarm")),
        sorted_list(p for _, p in of_type(cdk, resolve_cdk, "AWS::CloudWatch::Alarm")))
rule = lambda t, r: [{k: p.get(k) for k in ("EventBusName", "EventPattern", "State")} | {"State": p.get("State", "ENABLED")}
                     for _, p in of_type(t, r, "AWS::Events::Rule")]
compare("rules", rule(sam, resolve_sam), rule(cdk, resolve_cdk))
sam_role = only(sam, resolve_sam, "AWS::IAM::Role", "SAM")
sam_statements = [s for p in sam_role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
cdk_statements = [s for _, p in of_type(cdk, resolve_cdk, "AWS::IAM::Policy") for s in p["PolicyDocument"]["Statement"]]
compare("the function's IAM statements", sorted_list(sam_statements), sorted_list(cdk_statements))

if problems:
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    sys.exit(1)
print("the relay settings hold on both; SAM (parameter defaults) and CDK define the same resources and settings")
PY
}

# Each check runs even when an earlier one failed (unless it needs that one's
# output), so one run shows every failure; the script exits 1 if any failed.
FAILED=()
run_check() {
    local name=$1 t0
    shift
    t0=$(now)
    printf '\n==> %s\n' "$name" >&2
    if "$@"; then
        log "ok: $name ($(elapsed "$t0") s)"
    else
        log "FAILED: $name ($(elapsed "$t0") s)"
        FAILED+=("$name")
    fi
}

needs() { [[ -s $1 ]] || { log "not run: $1 is missing (an earlier check failed)"; return 1; }; }

check_sam_validate() {
    "$DEPLOY_VENV/bin/sam" validate --region us-east-1 --lint --template-file "$TEMPLATE"
}

check_cfn_lint_sam() {
    needs "$WORK_DIR/sam-expanded.json" \
        && "$DEPLOY_VENV/bin/cfn-lint" --format parseable -- "$WORK_DIR/sam-expanded.json"
}

check_tsc() {
    (cd "$CDK_DIR" && rm -rf dist && node_modules/.bin/tsc -p tsconfig.json)
}

check_cdk_synth() {
    needs "$CDK_DIR/dist/bin/app.js" \
        && mkdir -p "$WORK_DIR/code" \
        && printf '#!/bin/sh\necho "placeholder: build with cargo lambda build --release --arm64" >&2\nexit 1\n' \
            >"$WORK_DIR/code/bootstrap" \
        && chmod 755 "$WORK_DIR/code/bootstrap" \
        && (cd "$CDK_DIR" && node_modules/.bin/cdk synth --quiet --no-notices \
            --context outboxCodeDir="$WORK_DIR/code" --context stackName=OutboxRelay --output "$WORK_DIR/cdk.out") \
        && needs "$WORK_DIR/cdk.out/OutboxRelay.template.json" \
        && log "synthesized $WORK_DIR/cdk.out/OutboxRelay.template.json"
}

check_cfn_lint_cdk() {
    # W3005: CDK adds DependsOn on the role next to a GetAtt of it.
    needs "$WORK_DIR/cdk.out/OutboxRelay.template.json" \
        && "$DEPLOY_VENV/bin/cfn-lint" --format parseable --ignore-checks W3005 \
            -- "$WORK_DIR/cdk.out/OutboxRelay.template.json"
}

check_cdk_tests() {
    needs "$CDK_DIR/dist/test/outbox-relay.test.js" && (cd "$CDK_DIR" && node --test dist/test/)
}

check_relay_settings() {
    needs "$WORK_DIR/sam-expanded.json" && needs "$WORK_DIR/cdk.out/OutboxRelay.template.json" \
        && compare_templates "$WORK_DIR/sam-expanded.json" "$WORK_DIR/cdk.out/OutboxRelay.template.json"
}

check_env_names() {
    local -a cargo_cmd
    read -ra cargo_cmd <<<"${OUTBOX_CARGO:-cargo}"
    (cd "$REPO_DIR" && "${cargo_cmd[@]}" test --quiet -p outbox-lambda --test deployment_env)
}

versions() {
    log "sam $("$DEPLOY_VENV/bin/sam" --version | awk '{print $NF}'), aws-sam-translator \
$("$DEPLOY_VENV/bin/python" -c 'import samtranslator; print(samtranslator.__version__)'), \
$("$DEPLOY_VENV/bin/cfn-lint" --version), node $(node --version), \
aws-cdk-lib $(node -p 'require("'"$CDK_DIR"'/node_modules/aws-cdk-lib/package.json").version'), \
cdk $("$CDK_DIR/node_modules/.bin/cdk" --version 2>/dev/null | awk '{print $1}'), \
tsc $("$CDK_DIR/node_modules/.bin/tsc" --version | awk '{print $NF}')"
}

cmd_check() {
    local t0
    t0=$(now)
    cmd_install
    need node "Node 20+ runs the CDK app"
    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/outbox-deploy-check.XXXXXX")
    trap 'rm -rf "$WORK_DIR"' EXIT
    versions

    run_check "sam validate --lint (template.yaml)" check_sam_validate
    run_check "aws-sam-translator: template.yaml -> CloudFormation" expand_sam "$WORK_DIR/sam-expanded.json"
    run_check "cfn-lint (expanded SAM template)" check_cfn_lint_sam
    run_check "tsc (infra/cdk)" check_tsc
    run_check "cdk synth (infra/cdk, placeholder bootstrap)" check_cdk_synth
    run_check "cfn-lint (CDK template)" check_cfn_lint_cdk
    run_check "CDK assertion tests (node --test)" check_cdk_tests
    run_check "relay settings on both templates; SAM against CDK" check_relay_settings
    run_check "deployment_env: env var names, ReportBatchItemFailures (cargo test)" check_env_names

    if ((${#FAILED[@]} > 0)); then
        log "${#FAILED[@]} check(s) failed after $(elapsed "$t0") s:"
        printf '  - %s\n' "${FAILED[@]}" >&2
        exit 1
    fi
    log "all deployment checks passed in $(elapsed "$t0") s"
}

case ${1:-check} in
    install) cmd_install; log "installed ($DEPLOY_VENV, $CDK_DIR/node_modules)" ;;
    check) cmd_check ;;
    *)
        echo "usage: $0 [check | install]" >&2
        exit 2
        ;;
esac
