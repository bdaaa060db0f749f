//! The X-Ray trace header reaches the `PutEvents` request, as the AWS SDK
//! sends it: `outbox invoke` (the Lambda handler outside Lambda) runs with
//! `_X_AMZN_TRACE_ID` and `AWS_LAMBDA_FUNCTION_NAME` set, as in a Lambda
//! invocation, and a loopback server playing the bus records what arrives.
//! The endpoint is given only with `AWS_ENDPOINT_URL_EVENTBRIDGE`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use outbox_tests::outbox_binary;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

/// One request as the bus received it: lower-case header names and values, and the body.
type Received = (Vec<(String, String)>, String);

/// Answers every `PutEvents` with success for each entry, and keeps what it received.
fn start_bus() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let mut headers = Vec::new();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let entries = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Entries"]
                    .as_array()
                    .map_or(0, Vec::len);
                log.lock().unwrap().push((headers, body));
                let answer = serde_json::json!({
                    "FailedEntryCount": 0,
                    "Entries": (0..entries).map(|i| serde_json::json!({ "EventId": format!("e-{i}") })).collect::<Vec<_>>(),
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                stream.write_all(response.as_bytes()).unwrap();
            }
        }
    });
    (url, received)
}

#[test]
fn the_lambda_trace_id_reaches_the_put_events_request() {
    let (bus, received) = start_bus();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dynamodb-insert.json");
    let output = Command::new(outbox_binary())
        .args(["invoke", "--event", fixture])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTBOX_TABLE_NAME", "orders")
        .env("OUTBOX_EVENT_BUS_NAME", "orders-bus")
        .env(
            "OUTBOX_QUARANTINE_QUEUE_URL",
            "http://127.0.0.1:9/000000000000/unused",
        )
        .env("AWS_ENDPOINT_URL_EVENTBRIDGE", &bus)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_LAMBDA_FUNCTION_NAME", "outbox-relay")
        .env("_X_AMZN_TRACE_ID", TRACE)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), r#"{"batchItemFailures":[]}"#);
    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "no PutEvents reached the endpoint");
    for (headers, body) in received.iter() {
        let trace = headers
            .iter()
            .find(|(n, _)| n == "x-amzn-trace-id")
            .map(|(_, v)| v.as_str());
        assert_eq!(trace, Some(TRACE), "{headers:?}");
        assert!(body.contains("\"EventBusName\":\"orders-bus\""), "{body}");
    }
}
