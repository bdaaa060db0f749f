#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, docs, and every test,
# including the ones against DynamoDB Local and moto (installed on first use into
# .tools/, started on 127.0.0.1 for this run, stopped by pid at exit).
#
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh -p outbox-relay-core  # extra arguments go to `cargo test`
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing the local emulators (cached in .tools/)"
scripts/emulators.sh install

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# the example consumer Lambda is a feature-gated binary: lint it with its feature on
cargo clippy -p outbox-consumer --all-targets --all-features --quiet -- -D warnings
# trace capture from OpenTelemetry spans is behind outbox-relay-core's `opentelemetry` feature
cargo clippy -p outbox-relay-core --all-targets --features opentelemetry --quiet -- -D warnings

step "the writer crate's dependencies hold no relay code"
scripts/check-writer-deps.sh

step "cargo package --workspace --no-verify (every crate's manifest packages)"
cargo package --workspace --no-verify --allow-dirty --quiet
rm -rf target/package

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "starting DynamoDB Local and moto on 127.0.0.1"
STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/outbox-emulators.XXXXXX")
cleanup() {
    scripts/emulators.sh stop "$STATE_DIR" >&2 || true
    rm -rf "$STATE_DIR"
}
trap cleanup EXIT
ENV_FILE=$(scripts/emulators.sh start "$STATE_DIR")
# shellcheck disable=SC1090
. "$ENV_FILE"

step "cargo build (the outbox command, which the crash tests run as a child process)"
cargo build --quiet -p outbox-cli --bin outbox

step "cargo test --workspace"
cargo test --workspace "$@"
cargo test -p outbox-consumer --all-features --bins "$@"
cargo test -p outbox-relay-core --features opentelemetry "$@"

step "the Lambda binary under cargo-lambda's runtime emulator"
scripts/lambda-emulator-check.sh

step "the example command-handler Lambda under the runtime emulator, its events relayed"
scripts/example-check.sh

step "deployment templates (offline): sam validate, cfn-lint, cdk synth + tests, env var names"
scripts/deploy-check.sh

step "the SAM template deployed into LocalStack (host mode), the relay run through it"
scripts/localstack-check.sh

step "all checks passed"
