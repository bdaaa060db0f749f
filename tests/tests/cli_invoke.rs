//! `outbox invoke` as a script sees it: its exit status and its messages.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use outbox_tests::outbox_binary;
use std::process::{Command, Output, Stdio};

/// `outbox invoke` on a fixture with a bus that refuses connections, no
/// retries, and `extra` arguments.
fn invoke_against_a_dead_bus(fixture: &str, extra: &[&str]) -> Output {
    let fixture = format!("{}/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    Command::new(outbox_binary())
        .args(["invoke", "--event", &fixture])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTBOX_TABLE_NAME", "orders")
        .env("OUTBOX_EVENT_BUS_NAME", "orders-bus")
        .env("OUTBOX_QUARANTINE_QUEUE_URL", "http://127.0.0.1:9/000000000000/q")
        .env("OUTBOX_MAX_RETRIES", "0")
        .env("OUTBOX_MAX_RETRY", "1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn fail_on_batch_failure_makes_a_reported_record_a_failed_command() {
    let lenient = invoke_against_a_dead_bus("dynamodb-insert.json", &[]);
    let stdout = String::from_utf8_lossy(&lenient.stdout);
    assert!(lenient.status.success(), "{stdout}");
    assert!(stdout.contains("batchItemFailures\":[{"), "{stdout}");

    let strict = invoke_against_a_dead_bus("dynamodb-insert.json", &["--fail-on-batch-failure"]);
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("reported in batchItemFailures"), "{stderr}");
    // The response is printed either way.
    assert_eq!(String::from_utf8_lossy(&strict.stdout), stdout);
}

#[test]
fn a_misspelt_variable_is_named_with_the_one_meant_and_logs_have_no_colour_in_a_file() {
    let output = invoke_against_a_dead_bus("dynamodb-insert.json", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OUTBOX_MAX_RETRY") && stderr.contains("did you mean OUTBOX_MAX_RETRIES"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a non-terminal stderr: {stderr:?}"
    );
}

#[test]
fn an_event_that_is_not_a_streams_event_says_what_one_is() {
    let dir = std::env::temp_dir().join(format!("outbox-invoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("list.json");
    std::fs::write(&path, "[1,2]").unwrap();
    let output = Command::new(outbox_binary())
        .args(["invoke", "--event"])
        .arg(&path)
        .env_clear()
        .env("OUTBOX_TABLE_NAME", "orders")
        .env("OUTBOX_EVENT_BUS_NAME", "orders-bus")
        .env("OUTBOX_QUARANTINE_QUEUE_URL", "http://127.0.0.1:9/000000000000/q")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("a JSON object with a `Records` array"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
