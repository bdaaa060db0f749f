//! `PutEventsClient` against a loopback HTTP/1.1 server that plays the bus:
//! what goes on the wire, how each kind of answer is read and classified,
//! timeouts, dropped connections, connections kept alive and given up when
//! the server closes them, and credentials fetched again when the service
//! says they are stale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_types::SdkConfig;
use aws_types::region::Region;
use chrono::{TimeZone, Utc};
use outbox_core::{EntryResult, EventSink, FailureClass, FixedClock, OutboxEvent};
use outbox_eventbridge::{EventBridgeSink, PutEventsClient, put_events_body};
use serde_json::{Value, json};

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// What the server does with the n-th request.
enum Answer {
    Reply(u16, Vec<(&'static str, String)>, String),
    /// Reads the request, then says nothing for this long.
    Hang(Duration),
    /// Reads the request, then closes the connection.
    Drop,
    /// Answers, then closes the connection without saying so (no
    /// `Connection: close`), as a server ending an idle keep-alive
    /// connection does.
    ReplyThenClose(String),
}

type Script = Arc<dyn Fn(usize, &Seen) -> Answer + Send + Sync>;

struct Bus {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
}

impl Bus {
    /// A server on 127.0.0.1 answering by `script`; it lives as long as the
    /// test process (one thread per connection, keep-alive).
    fn start(script: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script: Script = Arc::new(script);
        let connections: Arc<AtomicUsize> = Arc::default();
        let (shared, accepted) = (Arc::clone(&seen), Arc::clone(&connections));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (seen, script) = (Arc::clone(&shared), Arc::clone(&script));
                std::thread::spawn(move || serve(stream, &seen, &script));
            }
        });
        Self {
            url,
            seen,
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, script: &Script) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut request = Seen {
            head,
            body: Vec::new(),
        };
        let length: usize = request.header("content-length").map_or(0, |v| v.parse().unwrap());
        request.body = vec![0; length];
        reader.read_exact(&mut request.body).unwrap();
        let n = {
            let mut all = seen.lock().unwrap();
            all.push(request.clone());
            all.len() - 1
        };
        let (status, headers, body, close) = match script(n, &request) {
            Answer::Reply(status, headers, body) => (status, headers, body, false),
            Answer::ReplyThenClose(body) => (200, Vec::new(), body, true),
            Answer::Hang(how_long) => {
                std::thread::sleep(how_long);
                return;
            }
            Answer::Drop => return,
        };
        let mut reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            reply.push_str(&format!("{k}: {v}\r\n"));
        }
        reply.push_str("\r\n");
        reply.push_str(&body);
        if stream.write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Credentials that count how often they are asked for.
#[derive(Debug, Default, Clone)]
struct Counting(Arc<AtomicUsize>);

impl ProvideCredentials for Counting {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        future::ProvideCredentials::ready(Ok(Credentials::new(
            format!("AKID{n}"),
            "secret",
            Some(format!("token-{n}")),
            None,
            "counting",
        )))
    }
}

fn client(bus: &Bus, credentials: Counting) -> PutEventsClient {
    let sdk = SdkConfig::builder()
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build();
    PutEventsClient::from_sdk_config(&sdk, Some(&bus.url))
        .unwrap()
        .with_attempt_timeout(Duration::from_millis(400))
}

fn events(n: usize) -> Vec<OutboxEvent> {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 0).unwrap());
    (0..n)
        .map(|i| {
            OutboxEvent::builder("shop.orders", "OrderPlaced")
                .aggregate("Order", format!("o-{i}"))
                .sequence(i as u64 + 1)
                .payload(&json!({"orderId": format!("o-{i}"), "note": "caf\u{e9} \"q\""}))
                .build(&clock)
                .unwrap()
        })
        .collect()
}

fn accepted(n: usize) -> String {
    let entries: Vec<Value> = (0..n).map(|i| json!({"EventId": format!("id-{i}")})).collect();
    json!({"FailedEntryCount": 0, "Entries": entries}).to_string()
}

fn ok(body: String) -> Answer {
    Answer::Reply(200, Vec::new(), body)
}

#[tokio::test]
async fn the_request_is_the_signed_body_of_the_chunk_and_every_entry_is_read() {
    let bus = Bus::start(|_, _| {
        ok(json!({"FailedEntryCount": 1, "Entries": [
            {"EventId": "a"},
            {"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"},
            {"EventId": "c"},
        ]})
        .to_string())
    });
    let sink = EventBridgeSink::with_client(client(&bus, Counting::default()), "orders-bus");
    let events = events(3);
    let chunk: Vec<&OutboxEvent> = events.iter().collect();
    let results = sink.publish(&chunk).await.unwrap();
    assert_eq!(results[0], EntryResult::Published);
    assert!(
        matches!(&results[1], EntryResult::Failed { class: FailureClass::Transient, code, message }
            if code == "ThrottlingException" && message == "slow down"),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], EntryResult::Published);

    let seen = bus.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert!(
        request.head.starts_with("POST / HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert_eq!(request.body, put_events_body(&chunk, "orders-bus").unwrap());
    assert_eq!(request.header("content-type"), Some("application/x-amz-json-1.1"));
    assert_eq!(request.header("x-amz-target"), Some("AWSEvents.PutEvents"));
    assert_eq!(
        request.header("host"),
        Some(bus.url.trim_start_matches("http://"))
    );
    assert_eq!(request.header("x-amz-security-token"), Some("token-0"));
    let authorization = request.header("authorization").unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKID0/")
            && authorization.contains("/eu-west-1/events/aws4_request")
            && authorization.contains(
                "SignedHeaders=content-length;content-type;host;x-amz-date;x-amz-security-token;x-amz-target,"
            ),
        "{authorization}"
    );
    assert!(request.header("user-agent").unwrap().starts_with("outbox-relay/"));
}

#[tokio::test]
async fn whole_call_errors_are_classified_by_code_and_status() {
    let bus = Bus::start(|n, _| {
        match n {
        0 => Answer::Reply(
            400,
            vec![("x-amzn-errortype", "ThrottlingException:http://internal".to_owned())],
            json!({"message": "Rate exceeded"}).to_string(),
        ),
        1 => Answer::Reply(
            400,
            Vec::new(),
            json!({"__type": "com.amazonaws.events#ResourceNotFoundException", "message": "Event bus orders-bus does not exist."})
                .to_string(),
        ),
        2 => Answer::Reply(503, Vec::new(), String::new()),
        3 => Answer::Reply(
            403,
            Vec::new(),
            json!({"__type": "AccessDeniedException", "Message": "not allowed"}).to_string(),
        ),
        _ => ok("{not json".to_owned()),
    }
    });
    let sink = EventBridgeSink::with_client(client(&bus, Counting::default()), "orders-bus");
    let events = events(1);
    let chunk: Vec<&OutboxEvent> = events.iter().collect();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let e = sink.publish(&chunk).await.unwrap_err();
        outcomes.push((e.class, e.code.clone()));
        if e.code == "ResourceNotFoundException" {
            assert!(e.message.contains("does not exist"), "{}", e.message);
        }
    }
    assert_eq!(
        outcomes,
        [
            (FailureClass::Transient, "ThrottlingException".to_owned()),
            (FailureClass::Permanent, "ResourceNotFoundException".to_owned()),
            (FailureClass::Transient, "HTTP503".to_owned()),
            (FailureClass::Permanent, "AccessDeniedException".to_owned()),
            (FailureClass::Transient, "ResponseError".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_call_without_an_answer_is_a_transient_timeout_and_a_dropped_one_a_dispatch_failure() {
    let bus = Bus::start(|n, _| match n {
        0 => Answer::Hang(Duration::from_secs(2)),
        1 => Answer::Drop,
        _ => ok(accepted(1)),
    });
    let client = client(&bus, Counting::default());
    let sink = EventBridgeSink::with_client(client, "orders-bus");
    let events = events(1);
    let chunk: Vec<&OutboxEvent> = events.iter().collect();

    let started = Instant::now();
    let e = sink.publish(&chunk).await.unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (FailureClass::Transient, "Timeout"),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "bounded by the attempt timeout"
    );

    let e = sink.publish(&chunk).await.unwrap_err();
    assert_eq!(e.class, FailureClass::Transient, "{e:?}");
    assert_eq!(e.code, "DispatchFailure", "{e:?}");

    assert_eq!(sink.publish(&chunk).await.unwrap(), [EntryResult::Published]);
}

#[tokio::test]
async fn credentials_are_fetched_once_and_again_when_the_service_says_they_expired() {
    let bus = Bus::start(|n, _| {
        match n {
        2 => Answer::Reply(
            400,
            Vec::new(),
            json!({"__type": "ExpiredTokenException", "message": "The security token included in the request is expired"})
                .to_string(),
        ),
        _ => ok(accepted(1)),
    }
    });
    let credentials = Counting::default();
    let sink = EventBridgeSink::with_client(client(&bus, credentials.clone()), "orders-bus");
    let events = events(1);
    let chunk: Vec<&OutboxEvent> = events.iter().collect();
    sink.publish(&chunk).await.unwrap();
    sink.publish(&chunk).await.unwrap();
    assert_eq!(credentials.0.load(Ordering::SeqCst), 1, "cached between calls");
    let e = sink.publish(&chunk).await.unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (FailureClass::Transient, "ExpiredTokenException")
    );
    sink.publish(&chunk).await.unwrap();
    assert_eq!(
        credentials.0.load(Ordering::SeqCst),
        2,
        "fetched again after the expiry"
    );
    let tokens: Vec<String> = bus
        .seen()
        .iter()
        .map(|s| s.header("x-amz-security-token").unwrap().to_owned())
        .collect();
    assert_eq!(tokens, ["token-0", "token-0", "token-0", "token-1"]);
}

#[tokio::test]
async fn calls_in_flight_together_each_get_their_own_answer() {
    // Four calls out at once on the pool's connections.
    let bus = Bus::start(|_, seen| {
        let body: Value = serde_json::from_slice(&seen.body).unwrap();
        let n = body["Entries"].as_array().unwrap().len();
        std::thread::sleep(Duration::from_millis(20));
        ok(accepted(n))
    });
    let sink = EventBridgeSink::with_client(client(&bus, Counting::default()), "orders-bus");
    let events = events(40);
    let chunks: Vec<Vec<&OutboxEvent>> = events.chunks(10).map(|c| c.iter().collect()).collect();
    let calls = chunks.iter().map(|chunk| sink.publish(chunk));
    let results = futures_util::future::join_all(calls).await;
    for result in results {
        assert_eq!(result.unwrap(), vec![EntryResult::Published; 10]);
    }
    assert_eq!(bus.seen().len(), 4);
}

#[tokio::test]
async fn calls_one_after_another_share_one_kept_alive_connection() {
    let bus = Bus::start(|_, _| ok(accepted(1)));
    let sink = EventBridgeSink::with_client(client(&bus, Counting::default()), "orders-bus");
    let events = events(1);
    let chunk: Vec<&OutboxEvent> = events.iter().collect();
    for _ in 0..3 {
        assert_eq!(sink.publish(&chunk).await.unwrap(), [EntryResult::Published]);
    }
    assert_eq!((bus.seen().len(), bus.connections()), (3, 1));
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_used_again() {
    // The server ends each connection after its first answer, without a
    // `Connection: close`: the client learns it only from the socket.
    let bus = Bus::start(|_, _| Answer::ReplyThenClose(accepted(1)));
    let sink = EventBridgeSink::with_client(client(&bus, Counting::default()), "orders-bus");
    let events = events(1);
    let chunk: Vec<&OutboxEvent> = events.iter().collect();
    for _ in 0..3 {
        assert_eq!(sink.publish(&chunk).await.unwrap(), [EntryResult::Published]);
        // Time for the connection's task to read the server's close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((bus.seen().len(), bus.connections()), (3, 3));
}
