#!/usr/bin/env bash
# Offline checks of the deployment templates (no AWS account, no Docker):
#
#   1. `sam validate --lint` of template.yaml, and of its RelayHost=none variant (a
#      copy whose RelayHost default is `none`);
#   2. both expanded to CloudFormation with aws-sam-translator, then `cfn-lint` on
#      each expansion (it checks what SAM passes through, e.g. the event source
#      mapping's enums): no finding allowed;
#   3. the CDK app (infra/cdk) compiled with tsc and synthesized with `cdk synth`
#      (a placeholder `bootstrap` stands in for the Lambda builds) three times: as is,
#      with the example consumer (-c exampleConsumerCodeDir), and without the relay
#      function (-c relayHost=none); `cfn-lint` on all three;
#   4. the CDK assertion tests (node:test);
#   5. the relay's non-negotiable settings on both templates (ReportBatchItemFailures,
#      TRIM_HORIZON, bisect, bounded retries, ParallelizationFactor 1, the outbox filter,
#      the on-failure destination, no IAM wildcard), the claim-check bucket's (SSE,
#      public access blocked, ACLs off, objects expiring no sooner than the queues'
#      messages, incomplete uploads aborted, retained with its TLS-only policy; the
#      function's only S3 grant s3:PutObject on its objects, OUTBOX_CLAIM_CHECK_BUCKET
#      naming it, OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES equal to the quarantine queue's
#      MaximumMessageSize), and the SAM template (at its parameter defaults) compared
#      with the CDK stack: same resources, same settings, same outputs, no example
#      consumer;
#   6. the same with the example consumer: SAM with DeployExampleConsumer=true against
#      the CDK stack with it, plus the consumer's own settings on both (an
#      EventInvokeConfig with bounded retries and age sending to a queue of its own
#      that has an alarm, the idempotency table's schema, a claim expiry at least the
#      timeout, one rule invoking it with a permission for that rule only);
#   6b. the same without the relay function: SAM with RelayHost=none against the CDK
#      stack with relayHost 'none': on both, no relay function, event source mapping,
#      stream-reading role, S3 grant or function alarm, while the table's NEW_IMAGE
#      stream, the queues and their alarms and the claim-check bucket stay; then the
#      same resources, settings and outputs;
#   7. what `sam build` builds: each rust-cargolambda function's Binary is a binary of
#      the package at its CodeUri, and the features that binary requires are the ones
#      cargo-lambda reads from that package's [package.metadata.lambda.build] (SAM
#      cannot pass features);
#   8. `cargo test -p outbox-lambda --test deployment_env`: both templates set exactly
#      the environment variables the binary reads on the relay function (and
#      ReportBatchItemFailures).
#
# Every check runs even if an earlier one failed (unless it needs that one's output);
# the script exits 1 if any failed, listing them.
#
#   scripts/deploy-check.sh                # install what is missing, then check
#   scripts/deploy-check.sh install        # install only
#   scripts/deploy-check.sh install-venv   # only the Python venv (scripts/localstack-check.sh
#                                          # deploys with its samlocal)
#
# Cache: $OUTBOX_TOOLS_DIR (default <repo>/.tools)/deploy-venv holds aws-sam-cli,
# aws-sam-cli-local (samlocal), aws-sam-translator and cfn-lint (pinned); infra/cdk/node_modules comes from
# `npm ci` (infra/cdk/package-lock.json), redone only when the lock file changes.
# Network is only used to install. OUTBOX_CARGO overrides the cargo command
# (e.g. "flock /tmp/lock cargo"). Exits non-zero on any failure.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
TOOLS_DIR=${OUTBOX_TOOLS_DIR:-$REPO_DIR/.tools}
CDK_DIR=$REPO_DIR/infra/cdk
TEMPLATE=$REPO_DIR/template.yaml

DEPLOY_SPEC='aws-sam-cli==1.170.0 aws-sam-cli-local==1.71.0 aws-sam-translator==1.115.0 cfn-lint==1.58.0'
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
    [[ ${1:-} == venv-only ]] || install_node_modules
    exec 8>&-
}

# ---------------------------------------------------------------- checks

# A SAM template ($1) -> CloudFormation (JSON, $2), the way `sam validate` runs the
# translator: the local CodeUri replaced by an S3 location, fixed pseudo
# parameters, no managed-policy lookup (the template names none).
expand_sam() {
    "$DEPLOY_VENV/bin/python" - "$1" "$2" <<'PY'
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

# The relay's settings on both templates, the example consumer's (when it is
# deployed), and SAM (at its parameter defaults, less the overrides in $3, a
# JSON object) against CDK. Prints every difference; exits 1 if there is any.
compare_templates() {
    "$DEPLOY_VENV/bin/python" - "$1" "$2" "$3" <<'PY'
import json
import re
import sys

sam = json.load(open(sys.argv[1], encoding="utf-8"))
cdk = json.load(open(sys.argv[2], encoding="utf-8"))
overrides = json.loads(sys.argv[3])
problems = []
NO_VALUE = object()

def sam_resolver(template):
    """Resolves SAM intrinsics at the parameter defaults (less the overrides); resources become their type."""
    params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    unknown = set(overrides) - set(params)
    if unknown:
        sys.exit(f"FAIL unknown SAM parameters {sorted(unknown)}")
    params.update(overrides)
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
                # Parameters by value; ${Resource} and ${Resource.Attribute} as Ref
                # and GetAtt resolve, so a Sub and the equivalent Join compare equal.
                def sub(m):
                    key = m.group(1)
                    if key in params:
                        return params[key]
                    name, dot, attribute = key.partition(".")
                    if name in resources:
                        kind = resources[name]["Type"]
                        return f"GetAtt {kind}.{attribute}" if dot else f"Ref {kind}"
                    return "${" + key + "}"
                return normalize(re.sub(r"\$\{([^}]+)\}", sub, arg))
            if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str):
                parts = resolve(arg[1])
                if isinstance(parts, list) and all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in parts):
                    return normalize(arg[0].join(str(p) for p in parts))
        out = {}
        for k, v in node.items():
            r = resolve(v)
            if r is not NO_VALUE:
                out[k] = r
        return out

    resolve.active = lambda r: "Condition" not in r or condition(r["Condition"])
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
SIDES = (("SAM", sam, resolve_sam), ("CDK", cdk, resolve_cdk))

def active(template, resolve, type_):
    """(logical id, raw resource) of the resources of `type_` that exist under these parameters."""
    return [(name, r) for name, r in sorted(template["Resources"].items()) if r["Type"] == type_ and resolve.active(r)]

def of_type(template, resolve, type_):
    return [(name, resolve(r.get("Properties", {}))) for name, r in active(template, resolve, type_)]

def only(template, resolve, type_, label):
    found = of_type(template, resolve, type_)
    if len(found) != 1:
        problems.append(f"{label}: expected one {type_}, found {len(found)}")
        return {}
    return found[0][1]

def is_ref(node, name):
    return node == {"Ref": name}

def is_getatt(node, name, attribute):
    return node in ({"Fn::GetAtt": [name, attribute]}, {"Fn::GetAtt": f"{name}.{attribute}"})

def getatt_target(node, attribute):
    """The logical id in {"Fn::GetAtt": [id, attribute]}, if it is one."""
    if isinstance(node, dict) and list(node) == ["Fn::GetAtt"]:
        arg = node["Fn::GetAtt"]
        name, attr = arg if isinstance(arg, list) else arg.split(".", 1)
        if attr == attribute:
            return name
    return None

# ---- the relay's settings, on each template
EXPECTED_PATTERN = {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"outbox": {"S": ["v1"]}}}}
RELAY_ON_LAMBDA = overrides.get("RelayHost", "lambda") == "lambda"
STREAM_READ = {"dynamodb:GetRecords", "dynamodb:GetShardIterator"}

def statements(template, resolve):
    """Every IAM statement of the active roles and policies."""
    found = []
    for type_ in ("AWS::IAM::Role", "AWS::IAM::Policy"):
        for _, r in active(template, resolve, type_):
            properties = r.get("Properties", {})
            documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
            documents += [properties["PolicyDocument"]] if "PolicyDocument" in properties else []
            found += [s for d in documents for s in d.get("Statement", [])]
    return found

def actions(statement):
    a = statement.get("Action", [])
    return set([a] if isinstance(a, str) else a)

for label, template, resolve in SIDES:
    if '"*"' in json.dumps([r for r in template["Resources"].values() if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::Role")]):
        problems.append(f"{label}: an IAM policy names the resource *")
    if RELAY_ON_LAMBDA:
        continue
    # RelayHost=none: nothing of the function, everything the standalone relay uses.
    if active(template, resolve, "AWS::Lambda::EventSourceMapping"):
        problems.append(f"{label}: RelayHost=none still creates an event source mapping")
    if [n for n, r in active(template, resolve, "AWS::Lambda::Function")
            if "OUTBOX_TABLE_NAME" in r.get("Properties", {}).get("Environment", {}).get("Variables", {})]:
        problems.append(f"{label}: RelayHost=none still creates the relay function")
    if [s for s in statements(template, resolve) if actions(s) & STREAM_READ]:
        problems.append(f"{label}: RelayHost=none still grants stream reads (the relay function's role)")
    if [n for n, p in of_type(template, resolve, "AWS::CloudWatch::Alarm") if p.get("Namespace") == "AWS/Lambda"]:
        problems.append(f"{label}: RelayHost=none still creates an alarm on the relay function")
    tables = [p for _, p in of_type(template, resolve, "AWS::DynamoDB::Table")
              if (p.get("StreamSpecification") or {}).get("StreamViewType") == "NEW_IMAGE"]
    if len(tables) != 1:
        problems.append(f"{label}: RelayHost=none: expected the outbox table with its NEW_IMAGE stream, found {len(tables)}")
    queue_alarms = [p for _, p in of_type(template, resolve, "AWS::CloudWatch::Alarm") if p.get("Namespace") == "AWS/SQS"]
    if len(queue_alarms) < 2:
        problems.append(f"{label}: RelayHost=none: the quarantine and on-failure queue alarms are missing")

for label, template, resolve in SIDES if RELAY_ON_LAMBDA else ():
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

# ---- the claim-check bucket, on each template (with either RelayHost)
def bucket_objects(node, suffix="/*"):
    """The logical id of the bucket whose objects `node` names (`${Bucket.Arn}<suffix>` as a Sub or a Join), if it does."""
    if isinstance(node, dict) and list(node) == ["Fn::Sub"] and isinstance(node["Fn::Sub"], str):
        m = re.fullmatch(r"\$\{([A-Za-z0-9]+)\.Arn\}" + re.escape(suffix), node["Fn::Sub"])
        return m and m.group(1)
    if isinstance(node, dict) and list(node) == ["Fn::Join"]:
        separator, parts = node["Fn::Join"]
        if separator == "" and len(parts) == 2 and parts[1] == suffix:
            return getatt_target(parts[0], "Arn")
    return None

# Where the relay stores events it publishes by claim-check: the example consumer reads them.
CLAIM_CHECKED_EVENTS = "/outbox/events/*"

PUBLIC_ACCESS_BLOCKED = {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                         "IgnorePublicAcls": True, "RestrictPublicBuckets": True}

for label, template, resolve in SIDES:
    buckets = active(template, resolve, "AWS::S3::Bucket")
    if len(buckets) != 1:
        problems.append(f"{label}: expected one S3 bucket (the claim-check bucket), found {len(buckets)}")
        continue
    bucket_id, bucket = buckets[0]
    bp = resolve(bucket.get("Properties", {}))
    def bucket_problem(what):
        problems.append(f"{label}: the claim-check bucket {bucket_id}: {what}")
    for key in ("DeletionPolicy", "UpdateReplacePolicy"):
        if bucket.get(key) != "Retain":
            bucket_problem(f"{key} is {bucket.get(key)!r}, not Retain (quarantined records outlive the stack)")
    algorithms = [r.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
                  for r in (bp.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration", [])]
    if algorithms not in (["AES256"], ["aws:kms"], ["aws:kms:dsse"]):
        bucket_problem(f"default encryption {algorithms} is not one SSE algorithm")
    if bp.get("PublicAccessBlockConfiguration") != PUBLIC_ACCESS_BLOCKED:
        bucket_problem(f"public access block {bp.get('PublicAccessBlockConfiguration')} does not block all four")
    if bp.get("OwnershipControls") != {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}:
        bucket_problem(f"ownership controls {bp.get('OwnershipControls')} are not BucketOwnerEnforced (ACLs off)")
    # Objects expire, but not before the longest-kept message that may name one.
    retention_days = max([p.get("MessageRetentionPeriod", 345600) for _, p in of_type(template, resolve, "AWS::SQS::Queue")]
                         or [0]) / 86400
    rules = [r for r in (bp.get("LifecycleConfiguration") or {}).get("Rules", []) if r.get("Status") == "Enabled"]
    whole = [r for r in rules if not ({"Prefix", "Filter", "TagFilters", "ObjectSizeGreaterThan", "ObjectSizeLessThan"} & set(r))]
    expiring = [r.get("ExpirationInDays") for r in whole if isinstance(r.get("ExpirationInDays"), int)]
    if not expiring or min(expiring) < retention_days:
        bucket_problem(f"no lifecycle rule expires every object after at least {retention_days:g} days "
                       f"(the queues' retention): {rules}")
    if not [r for r in whole if isinstance((r.get("AbortIncompleteMultipartUpload") or {}).get("DaysAfterInitiation"), int)]:
        bucket_problem(f"no lifecycle rule aborts incomplete multipart uploads: {rules}")
    # A policy denying every request made without TLS, kept with the retained bucket.
    policies = [r for _, r in active(template, resolve, "AWS::S3::BucketPolicy")
                if is_ref(r.get("Properties", {}).get("Bucket"), bucket_id)]
    def names_bucket_and_objects(statement):
        resource = statement.get("Resource")
        named = [("bucket", getatt_target(x, "Arn")) if getatt_target(x, "Arn") else ("objects", bucket_objects(x))
                 for x in (resource if isinstance(resource, list) else [resource])]
        return sorted(named) == [("bucket", bucket_id), ("objects", bucket_id)]
    tls_deny = [
        s for r in policies for s in r["Properties"].get("PolicyDocument", {}).get("Statement", [])
        if s.get("Effect") == "Deny" and "s3:*" in actions(s) and resolve(s.get("Principal")) in ("*", {"AWS": "*"})
        and resolve(s.get("Condition")) == {"Bool": {"aws:SecureTransport": False}} and names_bucket_and_objects(s)
    ]
    if len(policies) != 1 or not tls_deny:
        bucket_problem("no bucket policy denying s3:* to every principal on the bucket and its objects "
                       "when aws:SecureTransport is false")
    elif [k for k in ("DeletionPolicy", "UpdateReplacePolicy") if policies[0].get(k) != "Retain"]:
        bucket_problem("its TLS-only bucket policy is not retained with it")
    # Only the relay function's role may write it, and only with s3:PutObject on its objects;
    # the example consumer, when deployed, may only s3:GetObject the claim-checked events.
    s3_statements = [s for s in statements(template, resolve) if any(a.startswith("s3:") for a in actions(s))]
    reads = [s for s in s3_statements if s.get("Effect") == "Allow" and actions(s) == {"s3:GetObject"}
             and bucket_objects(s.get("Resource"), CLAIM_CHECKED_EVENTS) == bucket_id]
    s3_statements = [s for s in s3_statements if s not in reads]
    if len(reads) != (1 if overrides.get("DeployExampleConsumer") == "true" else 0):
        problems.append(f"{label}: expected s3:GetObject on {bucket_id}'s claim-checked events "
                        f"(<bucket arn>{CLAIM_CHECKED_EVENTS}) only for the example consumer: {reads}")
    if not RELAY_ON_LAMBDA:
        if s3_statements:
            problems.append(f"{label}: RelayHost=none still grants S3 actions: {s3_statements}")
        continue
    if len(s3_statements) != 1 or s3_statements[0].get("Effect") != "Allow" \
            or actions(s3_statements[0]) != {"s3:PutObject"} or bucket_objects(s3_statements[0].get("Resource")) != bucket_id:
        problems.append(f"{label}: the S3 grant is not exactly one s3:PutObject on {bucket_id}'s objects "
                        f"(<bucket arn>/*): {s3_statements}")
    relays = [r for _, r in active(template, resolve, "AWS::Lambda::Function")
              if "OUTBOX_TABLE_NAME" in r.get("Properties", {}).get("Environment", {}).get("Variables", {})]
    if len(relays) != 1:
        problems.append(f"{label}: expected one relay function (OUTBOX_TABLE_NAME), found {len(relays)}")
        continue
    variables = relays[0]["Properties"]["Environment"]["Variables"]
    if not is_ref(variables.get("OUTBOX_CLAIM_CHECK_BUCKET"), bucket_id):
        problems.append(f"{label}: OUTBOX_CLAIM_CHECK_BUCKET is {variables.get('OUTBOX_CLAIM_CHECK_BUCKET')!r}, "
                        f"not the claim-check bucket {bucket_id}")
    # The quarantine's size limit is the queue's, set on the queue (SQS's default has changed before).
    quarantine = (variables.get("OUTBOX_QUARANTINE_QUEUE_URL") or {}).get("Ref") \
        if isinstance(variables.get("OUTBOX_QUARANTINE_QUEUE_URL"), dict) else None
    limit = resolve(variables.get("OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES"))
    queue_limit = resolve(template["Resources"].get(quarantine, {}).get("Properties", {}).get("MaximumMessageSize"))
    if not isinstance(limit, int) or limit != queue_limit:
        problems.append(f"{label}: OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES ({limit!r}) is not the quarantine queue's "
                        f"MaximumMessageSize ({queue_limit!r})")
    # The on-failure queue (the standalone relay's too) takes messages of that size.
    on_failure = getatt_target(
        next((r["Properties"] for _, r in active(template, resolve, "AWS::Lambda::EventSourceMapping")), {})
        .get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"), "Arn")
    on_failure_limit = resolve(template["Resources"].get(on_failure, {}).get("Properties", {}).get("MaximumMessageSize"))
    if isinstance(limit, int) and not (isinstance(on_failure_limit, int) and on_failure_limit >= limit):
        problems.append(f"{label}: the on-failure queue's MaximumMessageSize ({on_failure_limit!r}) is below "
                        f"OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES ({limit!r})")

# ---- the example consumer's settings, on each template (deployed only with DeployExampleConsumer=true)
EXPECT_CONSUMER = overrides.get("DeployExampleConsumer") == "true"
for label, template, resolve in SIDES:
    resources = template["Resources"]
    consumers = [
        (name, r) for name, r in active(template, resolve, "AWS::Lambda::Function")
        if "IDEMPOTENCY_TABLE_NAME" in r.get("Properties", {}).get("Environment", {}).get("Variables", {})
    ]
    invoke_configs = active(template, resolve, "AWS::Lambda::EventInvokeConfig")
    if not EXPECT_CONSUMER:
        if consumers or invoke_configs:
            problems.append(f"{label}: the example consumer is deployed although it was not asked for")
        continue
    if len(consumers) != 1:
        problems.append(f"{label}: expected one example consumer function (IDEMPOTENCY_TABLE_NAME), found {len(consumers)}")
        continue
    fn, function = consumers[0]
    variables = function["Properties"]["Environment"]["Variables"]
    # Its idempotency table: the README's schema.
    table = next((t for t in (r for n, r in resources.items() if is_ref(variables["IDEMPOTENCY_TABLE_NAME"], n))), None)
    tp = resolve((table or {}).get("Properties", {}))
    if (table or {}).get("Type") != "AWS::DynamoDB::Table" or tp.get("KeySchema") != [{"AttributeName": "pk", "KeyType": "HASH"}] \
            or tp.get("TimeToLiveSpecification") != {"AttributeName": "ttl", "Enabled": True} \
            or tp.get("BillingMode") != "PAY_PER_REQUEST" or not (tp.get("SSESpecification") or {}).get("SSEEnabled"):
        problems.append(f"{label}: the example consumer's IDEMPOTENCY_TABLE_NAME is not an on-demand, encrypted table "
                        f"with hash key pk and TTL on ttl: {tp}")
    seconds = resolve(variables.get("IDEMPOTENCY_IN_PROGRESS_SECONDS"))
    if not isinstance(seconds, int) or seconds < resolve(function["Properties"].get("Timeout", 3)):
        problems.append(f"{label}: the example consumer's IDEMPOTENCY_IN_PROGRESS_SECONDS ({seconds!r}) is below its timeout")
    # Asynchronous invocations: bounded, then a queue of its own that has an alarm.
    mine = [r["Properties"] for _, r in invoke_configs if is_ref(r["Properties"].get("FunctionName"), fn)]
    if len(mine) != 1:
        problems.append(f"{label}: the example consumer has {len(mine)} EventInvokeConfig (expected one: bounded "
                        "retries and an on-failure destination)")
    else:
        config = mine[0]
        retries, age = resolve(config.get("MaximumRetryAttempts")), resolve(config.get("MaximumEventAgeInSeconds"))
        if not (isinstance(retries, int) and 0 <= retries <= 2):
            problems.append(f"{label}: the example consumer's MaximumRetryAttempts = {retries!r}: must be set (0..2)")
        if not (isinstance(age, int) and 60 <= age <= 21600):
            problems.append(f"{label}: the example consumer's MaximumEventAgeInSeconds = {age!r}: must be set (60..21600)")
        queue = getatt_target(config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"), "Arn")
        esm_destination = [
            getatt_target(r["Properties"].get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"), "Arn")
            for _, r in active(template, resolve, "AWS::Lambda::EventSourceMapping")
        ]
        if queue is None or resources[queue]["Type"] != "AWS::SQS::Queue":
            problems.append(f"{label}: the example consumer's on-failure destination is not an SQS queue of the stack")
        elif queue in esm_destination:
            problems.append(f"{label}: the example consumer's on-failure destination is the relay's on-failure queue")
        elif not any(
            any(getatt_target(d.get("Value"), "QueueName") == queue for d in r["Properties"].get("Dimensions", []))
            for _, r in active(template, resolve, "AWS::CloudWatch::Alarm")
        ):
            problems.append(f"{label}: no alarm on the example consumer's dead-letter queue")
    # Invoked by a rule on the bus, allowed for that rule only.
    rules = [name for name, r in active(template, resolve, "AWS::Events::Rule")
             if any(is_getatt(t.get("Arn"), fn, "Arn") for t in r["Properties"].get("Targets", []))]
    allowed = [r["Properties"] for _, r in active(template, resolve, "AWS::Lambda::Permission")
               if is_getatt(r["Properties"].get("FunctionName"), fn, "Arn") or is_ref(r["Properties"].get("FunctionName"), fn)]
    if len(rules) != 1:
        problems.append(f"{label}: expected one rule targeting the example consumer, found {len(rules)}")
    elif [p.get("Principal") for p in allowed] != ["events.amazonaws.com"] \
            or not is_getatt(allowed[0].get("SourceArn"), rules[0], "Arn"):
        problems.append(f"{label}: the example consumer's permission does not allow exactly its rule: {allowed}")

# ---- SAM against CDK
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
        if r["Type"] in ("AWS::CDK::Metadata", "AWS::IAM::Policy") or not resolve.active(r):
            continue
        counts[r["Type"]] = counts.get(r["Type"], 0) + 1
    return counts

def by(key):
    return lambda items: sorted(items, key=lambda x: json.dumps(key(x), sort_keys=True))

sorted_list = by(lambda x: x)

compare("resource types", types(sam, resolve_sam), types(cdk, resolve_cdk))
env_names = lambda p: sorted(p.get("Environment", {}).get("Variables", {}))
for type_, drop, order in (
    ("AWS::Lambda::EventSourceMapping", (), sorted_list),
    ("AWS::DynamoDB::Table", (), by(lambda p: p.get("KeySchema"))),
    ("AWS::Logs::LogGroup", (), sorted_list),
    ("AWS::Lambda::Function", ("Code", "Description", "Tags"), by(env_names)),
    ("AWS::Lambda::EventInvokeConfig", (), sorted_list),
    ("AWS::Lambda::Permission", (), sorted_list),
):
    sides = []
    for template, resolve in ((sam, resolve_sam), (cdk, resolve_cdk)):
        found = [p for _, p in of_type(template, resolve, type_)]
        for p in found:
            for key in drop:
                p.pop(key, None)
            if type_ == "AWS::Lambda::EventSourceMapping":
                p["FilterCriteria"] = [json.loads(f["Pattern"]) for f in p.get("FilterCriteria", {}).get("Filters", [])]
        sides.append(order(found))
    compare(type_, *sides)

compare("queues", sorted_list(p for _, p in of_type(sam, resolve_sam, "AWS::SQS::Queue")),
        sorted_list(p for _, p in of_type(cdk, resolve_cdk, "AWS::SQS::Queue")))
compare("alarms", sorted_list(p for _, p in of_type(sam, resolve_sam, "AWS::CloudWatch::Alarm")),
        sorted_list(p for _, p in of_type(cdk, resolve_cdk, "AWS::CloudWatch::Alarm")))

def with_policies(template, resolve, type_):
    """Each resource's properties with its deletion and replacement policies (CloudFormation's default Delete)."""
    return sorted_list({"DeletionPolicy": r.get("DeletionPolicy", "Delete"),
                        "UpdateReplacePolicy": r.get("UpdateReplacePolicy", "Delete"),
                        "Properties": resolve(r.get("Properties", {}))} for _, r in active(template, resolve, type_))

for type_ in ("AWS::S3::Bucket", "AWS::S3::BucketPolicy"):
    compare(type_, with_policies(sam, resolve_sam, type_), with_policies(cdk, resolve_cdk, type_))
rule = lambda t, r: sorted_list(
    {k: p.get(k) for k in ("EventBusName", "EventPattern")}
    | {"State": p.get("State", "ENABLED"), "Targets": [target.get("Arn") for target in p.get("Targets", [])]}
    for _, p in of_type(t, r, "AWS::Events::Rule"))
compare("rules", rule(sam, resolve_sam), rule(cdk, resolve_cdk))

def role_statements(template, resolve):
    """Each role's statements (inline, or in AWS::IAM::Policy resources naming it), one sorted list per role."""
    per_role = {name: [s for p in r.get("Properties", {}).get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
                for name, r in active(template, resolve, "AWS::IAM::Role")}
    for _, policy in active(template, resolve, "AWS::IAM::Policy"):
        for role in policy["Properties"].get("Roles", []):
            per_role.setdefault(role.get("Ref"), []).extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return sorted_list(sorted_list(resolve(s) for s in statements) for statements in per_role.values())

compare("the functions' IAM statements", role_statements(sam, resolve_sam), role_statements(cdk, resolve_cdk))

def outputs(template, resolve):
    return sorted(name for name, o in template.get("Outputs", {}).items() if resolve.active(o))

compare("outputs", outputs(sam, resolve_sam), outputs(cdk, resolve_cdk))

if problems:
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    sys.exit(1)
if not RELAY_ON_LAMBDA:
    print(f"no relay function on either; SAM ({overrides}) and CDK (relayHost 'none') "
          "define the same resources and settings")
elif EXPECT_CONSUMER:
    print(f"the relay and example consumer settings hold on both; SAM ({overrides}) and CDK (exampleConsumer) "
          "define the same resources and settings")
else:
    print("the relay settings hold on both, no example consumer; SAM (parameter defaults) and CDK define "
          "the same resources and settings")
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

# template.yaml with RelayHost's default set to none, as $WORK_DIR/template-relay-host-none.yaml:
# what `sam validate` and cfn-lint then check is the stack without the relay function.
write_relay_host_none() {
    "$DEPLOY_VENV/bin/python" - "$TEMPLATE" "$WORK_DIR/template-relay-host-none.yaml" <<'PY'
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
variant, found = re.subn(r"(\n  RelayHost:\n(?:    .*\n)*?    Default: )lambda\n", r"\1none\n", text)
if found != 1:
    sys.exit("FAIL template.yaml has no parameter RelayHost with Default: lambda")
open(sys.argv[2], "w", encoding="utf-8").write(variant)
PY
}

check_sam_validate_none() {
    write_relay_host_none \
        && "$DEPLOY_VENV/bin/sam" validate --region us-east-1 --lint --template-file "$WORK_DIR/template-relay-host-none.yaml"
}

check_cfn_lint_sam() {
    needs "$WORK_DIR/sam-expanded.json" \
        && "$DEPLOY_VENV/bin/cfn-lint" --format parseable -- "$WORK_DIR/sam-expanded.json"
}

check_expand_sam_none() {
    needs "$WORK_DIR/template-relay-host-none.yaml" \
        && expand_sam "$WORK_DIR/template-relay-host-none.yaml" "$WORK_DIR/sam-expanded-none.json"
}

check_cfn_lint_sam_none() {
    needs "$WORK_DIR/sam-expanded-none.json" \
        && "$DEPLOY_VENV/bin/cfn-lint" --format parseable -- "$WORK_DIR/sam-expanded-none.json"
}

check_tsc() {
    (cd "$CDK_DIR" && rm -rf dist && node_modules/.bin/tsc -p tsconfig.json)
}

# cdk synth into $WORK_DIR/OUT with a placeholder bootstrap, and extra context.
cdk_synth() {
    local out=$1
    shift
    needs "$CDK_DIR/dist/bin/app.js" \
        && mkdir -p "$WORK_DIR/code" \
        && printf '#!/bin/sh\necho "placeholder: build with cargo lambda build --release --arm64" >&2\nexit 1\n' \
            >"$WORK_DIR/code/bootstrap" \
        && chmod 755 "$WORK_DIR/code/bootstrap" \
        && (cd "$CDK_DIR" && node_modules/.bin/cdk synth --quiet --no-notices \
            --context outboxCodeDir="$WORK_DIR/code" --context stackName=OutboxRelay "$@" --output "$WORK_DIR/$out") \
        && needs "$WORK_DIR/$out/OutboxRelay.template.json" \
        && log "synthesized $WORK_DIR/$out/OutboxRelay.template.json"
}

check_cdk_synth() { cdk_synth cdk.out; }

check_cdk_synth_consumer() { cdk_synth cdk-consumer.out --context exampleConsumerCodeDir="$WORK_DIR/code"; }

check_cdk_synth_none() { cdk_synth cdk-none.out --context relayHost=none; }

check_cfn_lint_cdk() {
    # W3005: CDK adds DependsOn on the role next to a GetAtt of it.
    needs "$WORK_DIR/cdk.out/OutboxRelay.template.json" \
        && needs "$WORK_DIR/cdk-consumer.out/OutboxRelay.template.json" \
        && needs "$WORK_DIR/cdk-none.out/OutboxRelay.template.json" \
        && "$DEPLOY_VENV/bin/cfn-lint" --format parseable --ignore-checks W3005 \
            -- "$WORK_DIR/cdk.out/OutboxRelay.template.json" "$WORK_DIR/cdk-consumer.out/OutboxRelay.template.json" \
            "$WORK_DIR/cdk-none.out/OutboxRelay.template.json"
}

check_cdk_tests() {
    needs "$CDK_DIR/dist/test/outbox-relay.test.js" && (cd "$CDK_DIR" && node --test dist/test/)
}

check_relay_settings() {
    needs "$WORK_DIR/sam-expanded.json" && needs "$WORK_DIR/cdk.out/OutboxRelay.template.json" \
        && compare_templates "$WORK_DIR/sam-expanded.json" "$WORK_DIR/cdk.out/OutboxRelay.template.json" '{}'
}

check_consumer_settings() {
    needs "$WORK_DIR/sam-expanded.json" && needs "$WORK_DIR/cdk-consumer.out/OutboxRelay.template.json" \
        && compare_templates "$WORK_DIR/sam-expanded.json" "$WORK_DIR/cdk-consumer.out/OutboxRelay.template.json" \
            '{"DeployExampleConsumer": "true"}'
}

check_relay_host_none() {
    needs "$WORK_DIR/sam-expanded.json" && needs "$WORK_DIR/cdk-none.out/OutboxRelay.template.json" \
        && compare_templates "$WORK_DIR/sam-expanded.json" "$WORK_DIR/cdk-none.out/OutboxRelay.template.json" \
            '{"RelayHost": "none"}'
}

# Each rust-cargolambda function of template.yaml: `sam build` runs `cargo lambda
# build --release --arm64 --bin <Binary>` in its CodeUri and passes no features, so
# the binary must be one of that package's and the features it requires must be
# in the package's [package.metadata.lambda.build] features (cargo-lambda reads
# them there).
check_sam_build_targets() {
    local -a cargo_cmd
    read -ra cargo_cmd <<<"${OUTBOX_CARGO:-cargo}"
    (cd "$REPO_DIR" && "${cargo_cmd[@]}" metadata --no-deps --format-version 1 --offline) >"$WORK_DIR/cargo-metadata.json" \
        && "$DEPLOY_VENV/bin/python" - "$TEMPLATE" "$WORK_DIR/cargo-metadata.json" "$REPO_DIR" <<'PY'
import json
import os
import sys

from samcli.yamlhelper import yaml_parse

template_path, metadata_path, repo = sys.argv[1:4]
with open(template_path, encoding="utf-8") as f:
    template = yaml_parse(f.read())
packages = {
    os.path.dirname(p["manifest_path"]): p for p in json.load(open(metadata_path, encoding="utf-8"))["packages"]
}
problems, checked = [], []
for name, resource in template["Resources"].items():
    metadata = resource.get("Metadata", {})
    if resource.get("Type") != "AWS::Serverless::Function" or metadata.get("BuildMethod") != "rust-cargolambda":
        continue
    code_uri = os.path.normpath(os.path.join(repo, resource["Properties"]["CodeUri"]))
    package = packages.get(code_uri)
    binary = metadata.get("BuildProperties", {}).get("Binary")
    if package is None:
        problems.append(f"{name}: CodeUri {code_uri} is not a package of the workspace")
        continue
    bins = {t["name"]: t for t in package["targets"] if "bin" in t["kind"]}
    if binary is None and len(bins) != 1:
        problems.append(f"{name}: package {package['name']} has {len(bins)} binaries; name one with BuildProperties Binary")
        continue
    target = bins.get(binary) if binary else next(iter(bins.values()))
    if target is None:
        problems.append(f"{name}: package {package['name']} has no binary {binary} (it has {sorted(bins)})")
        continue
    build = ((package.get("metadata") or {}).get("lambda") or {}).get("build") or {}
    missing = sorted(set(target.get("required-features") or []) - set(build.get("features") or []))
    if missing:
        problems.append(f"{name}: binary {target['name']} requires features {missing}, which sam build cannot pass: "
                        f"add them to [package.metadata.lambda.build] features of {package['name']}")
        continue
    checked.append(f"{name} -> {package['name']} --bin {target['name']}"
                   + (f" (features {build['features']})" if build.get("features") else ""))
if problems or not checked:
    for p in problems or ["no rust-cargolambda function in the template"]:
        print(f"FAIL {p}", file=sys.stderr)
    sys.exit(1)
print("sam build: " + "; ".join(checked))
PY
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
    run_check "aws-sam-translator: template.yaml -> CloudFormation" \
        expand_sam "$TEMPLATE" "$WORK_DIR/sam-expanded.json"
    run_check "cfn-lint (expanded SAM template)" check_cfn_lint_sam
    run_check "sam validate --lint (template.yaml, RelayHost=none)" check_sam_validate_none
    run_check "aws-sam-translator: template.yaml (RelayHost=none) -> CloudFormation" check_expand_sam_none
    run_check "cfn-lint (expanded SAM template, RelayHost=none)" check_cfn_lint_sam_none
    run_check "tsc (infra/cdk)" check_tsc
    run_check "cdk synth (infra/cdk, placeholder bootstrap)" check_cdk_synth
    run_check "cdk synth with the example consumer (-c exampleConsumerCodeDir)" check_cdk_synth_consumer
    run_check "cdk synth without the relay function (-c relayHost=none)" check_cdk_synth_none
    run_check "cfn-lint (the three CDK templates)" check_cfn_lint_cdk
    run_check "CDK assertion tests (node --test)" check_cdk_tests
    run_check "relay settings on both templates; SAM against CDK" check_relay_settings
    run_check "example consumer: SAM (DeployExampleConsumer=true) against CDK (exampleConsumer)" \
        check_consumer_settings
    run_check "no relay function: SAM (RelayHost=none) against CDK (relayHost 'none')" check_relay_host_none
    run_check "sam build targets: Binary and features of each rust-cargolambda function" check_sam_build_targets
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
    install-venv) cmd_install venv-only; log "installed ($DEPLOY_VENV)" ;;
    check) cmd_check ;;
    *)
        echo "usage: $0 [check | install | install-venv]" >&2
        exit 2
        ;;
esac
