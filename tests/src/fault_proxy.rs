//! A TCP proxy in front of moto's EventBridge that injects the faults a real
//! bus shows: throttling (400), internal errors (500, 503), timeouts (the
//! call held past the SDK's attempt timeout, before or after forwarding it),
//! dropped connections (before or after forwarding), and per-entry failures
//! (entries taken out of the request and reported failed in an HTTP 200).
//! It counts what it did, in particular the entries whose answer was lost:
//! those may arrive twice whatever the relay does.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test fixture: a broken proxy should fail loudly

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use serde_json::{Value, json};

/// Both clients' attempt timeout; the proxy's timeouts hold a call longer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a timeout fault holds a call.
pub const HOLD: Duration = Duration::from_millis(1_300);

/// A fault the proxy injects into a PutEvents call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A ThrottlingException (400).
    Throttle,
    /// An InternalException (500).
    Internal500,
    /// A ServiceUnavailable (503).
    Unavailable503,
    /// Held past the attempt timeout, never forwarded.
    TimeoutBeforeForwarding,
    /// Forwarded, then held past the attempt timeout: the answer is lost.
    TimeoutAfterForwarding,
    /// The connection dropped before forwarding.
    DropBeforeForwarding,
    /// Forwarded, then the connection dropped: the answer is lost.
    DropAfterForwarding,
    /// Some entries taken out and reported failed in an HTTP 200.
    EntryFailures,
}

/// The kinds of fault, in the order they take turns.
pub const FAULT_KINDS: [Fault; 8] = [
    Fault::Throttle,
    Fault::EntryFailures,
    Fault::Internal500,
    Fault::DropBeforeForwarding,
    Fault::TimeoutBeforeForwarding,
    Fault::Unavailable503,
    Fault::DropAfterForwarding,
    Fault::TimeoutAfterForwarding,
];

/// What the proxy saw and did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// PutEvents calls received.
    pub calls: usize,
    /// Faults injected, by kind.
    pub faults: HashMap<Fault, usize>,
    /// Entries moto received but whose answer the relay never saw (an
    /// injected timeout or drop after forwarding, moto itself answering
    /// later than the SDK waits, or a call the relay gave up at its batch
    /// deadline).
    pub ambiguous_entries: usize,
    /// Calls moto answered later than the SDK waits (not injected).
    pub slow_upstream: usize,
    /// Calls forwarded and then given up by the client before the answer
    /// came back (not injected).
    pub given_up: usize,
    /// Entries taken out of a request and reported failed.
    pub failed_entries: usize,
}

/// A fault-injecting proxy in front of moto's EventBridge.
pub struct Proxy {
    /// Where the relay's EventBridge client should send its calls.
    pub url: String,
    /// What it saw and did so far.
    pub stats: Arc<Mutex<ProxyStats>>,
}

/// One HTTP request or response, read whole.
struct Message {
    head: String,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The head with `Content-Length` replaced and `Connection` dropped.
    fn with_body(&self, body: Vec<u8>, extra: &str) -> Vec<u8> {
        let mut out = String::new();
        for (i, line) in self.head.lines().enumerate() {
            let lower = line.to_ascii_lowercase();
            if i > 0
                && (lower.starts_with("content-length:")
                    || lower.starts_with("connection:")
                    || lower.starts_with("transfer-encoding:"))
            {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n{extra}\r\n", body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

/// Reads one message; `None` on a clean end of stream. With
/// `to_eof`, a message without `Content-Length` runs to the end of the stream.
fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>, to_eof: bool) -> Option<Message> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut message = Message {
        head,
        body: Vec::new(),
    };
    assert!(
        message.header("transfer-encoding").is_none(),
        "chunked bodies are not expected here"
    );
    match message
        .header("content-length")
        .map(|v| v.parse::<usize>().unwrap())
    {
        Some(length) => {
            while buf.len() < length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            message.body = buf.drain(..length).collect();
        }
        None if to_eof => {
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            message.body = std::mem::take(buf);
        }
        None => {}
    }
    Some(message)
}

/// Sends `request` (with `body`) to moto on a fresh connection (moto closes
/// every connection) and returns its answer.
fn forward(moto: &str, request: &Message, body: Vec<u8>) -> Message {
    let mut upstream = TcpStream::connect(moto).unwrap();
    upstream.set_nodelay(true).unwrap();
    upstream
        .write_all(&request.with_body(body, "Connection: close\r\n"))
        .unwrap();
    let mut buf = Vec::new();
    read_message(&mut upstream, &mut buf, true).expect("moto answered")
}

fn json_response(status: u16, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn error_response(status: u16, kind: &str) -> Vec<u8> {
    json_response(
        status,
        &json!({ "__type": kind, "message": "injected by the fault proxy" }),
    )
}

impl Proxy {
    /// A proxy to `moto` (host:port) injecting a fault of `kinds`, in turn,
    /// into `rate` of the PutEvents calls; `seed` draws the entries an
    /// `EntryFailures` fault fails.
    pub fn start(moto: String, rate: f64, seed: u64, kinds: &'static [Fault]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let rng = Arc::new(Mutex::new(fastrand_like::Rng::new(seed)));
        let shared = Arc::clone(&stats);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (moto, stats, rng) = (moto.clone(), Arc::clone(&shared), Arc::clone(&rng));
                std::thread::spawn(move || serve(stream, &moto, &stats, &rng, rate, kinds));
            }
        });
        Self { url, stats }
    }
}

fn serve(
    mut client: TcpStream,
    moto: &str,
    stats: &Mutex<ProxyStats>,
    rng: &Mutex<fastrand_like::Rng>,
    rate: f64,
    kinds: &[Fault],
) {
    client.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    while let Some(request) = read_message(&mut client, &mut buf, false) {
        let put_events = request.header("x-amz-target") == Some("AWSEvents.PutEvents");
        let entries = if put_events {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            body["Entries"].as_array().map_or(0, Vec::len)
        } else {
            0
        };
        let fault = if put_events {
            let mut s = stats.lock().unwrap();
            let fault = scheduled(s.calls, rate, kinds);
            s.calls += 1;
            if let Some(f) = fault {
                *s.faults.entry(f).or_default() += 1;
                if matches!(f, Fault::TimeoutAfterForwarding | Fault::DropAfterForwarding) {
                    s.ambiguous_entries += entries;
                }
            }
            fault
        } else {
            None
        };
        let started = Instant::now();
        let reply = match fault {
            None => {
                let answer = forward(moto, &request, request.body.clone());
                answer.with_body(answer.body.clone(), "")
            }
            Some(Fault::Throttle) => error_response(400, "ThrottlingException"),
            Some(Fault::Internal500) => error_response(500, "InternalException"),
            Some(Fault::Unavailable503) => error_response(503, "ServiceUnavailable"),
            Some(Fault::TimeoutBeforeForwarding) => {
                std::thread::sleep(HOLD);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::TimeoutAfterForwarding) => {
                forward(moto, &request, request.body.clone());
                std::thread::sleep(HOLD);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::DropBeforeForwarding) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::DropAfterForwarding) => {
                forward(moto, &request, request.body.clone());
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::EntryFailures) => {
                let failed = partial(moto, &request, rng, stats);
                json_response(200, &failed)
            }
        };
        if put_events && started.elapsed() + Duration::from_millis(50) >= ATTEMPT_TIMEOUT {
            // The SDK gave up (or is about to) on a call moto did carry out.
            let mut s = stats.lock().unwrap();
            s.slow_upstream += 1;
            s.ambiguous_entries += entries;
        } else if put_events && client_gone(&client) {
            // The relay gave the call up (its batch deadline) while moto
            // carried it out.
            let mut s = stats.lock().unwrap();
            s.given_up += 1;
            s.ambiguous_entries += entries;
        }
        if client.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Whether the client has closed its end of the connection: it gave the call
/// up while the proxy waited for moto.
fn client_gone(client: &TcpStream) -> bool {
    if client.set_nonblocking(true).is_err() {
        return false;
    }
    let gone = match client.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = client.set_nonblocking(false);
    gone
}

/// The fault of the `n`-th PutEvents call (from 0): exactly `rate` of the
/// calls get one, spread evenly, and the kinds take turns in their order, so
/// that every kind is injected once `rate` of the calls reaches their number.
fn scheduled(n: usize, rate: f64, kinds: &[Fault]) -> Option<Fault> {
    let before = (n as f64 * rate).floor() as usize;
    let after = ((n + 1) as f64 * rate).floor() as usize;
    (after > before).then(|| kinds[before % kinds.len()])
}

/// Takes some entries out of the request (each with probability 0.4, at
/// least one), forwards the rest to moto, and answers as EventBridge does:
/// an HTTP 200 whose failed entries carry a transient error code.
fn partial(
    moto: &str,
    request: &Message,
    rng: &Mutex<fastrand_like::Rng>,
    stats: &Mutex<ProxyStats>,
) -> Value {
    let mut body: Value = serde_json::from_slice(&request.body).unwrap();
    let entries = body["Entries"].as_array().cloned().unwrap_or_default();
    let mut fail: Vec<bool> = {
        let mut rng = rng.lock().unwrap();
        entries.iter().map(|_| rng.f64() < 0.4).collect()
    };
    if !fail.iter().any(|f| *f) && !fail.is_empty() {
        fail[0] = true;
    }
    let kept: Vec<Value> = entries
        .iter()
        .zip(&fail)
        .filter(|(_, f)| !**f)
        .map(|(e, _)| e.clone())
        .collect();
    let mut moto_results = Vec::new();
    let mut moto_failed = 0;
    if !kept.is_empty() {
        body["Entries"] = Value::Array(kept);
        let answer = forward(moto, request, body.to_string().into_bytes());
        let answer: Value = serde_json::from_slice(&answer.body).unwrap();
        moto_failed = answer["FailedEntryCount"].as_u64().unwrap_or(0);
        moto_results = answer["Entries"].as_array().cloned().unwrap_or_default();
    }
    let mut moto_results = moto_results.into_iter();
    let mut injected = 0;
    let results: Vec<Value> = fail
        .iter()
        .enumerate()
        .map(|(i, failed)| {
            if *failed {
                injected += 1;
                let code = if i % 2 == 0 {
                    "ThrottlingException"
                } else {
                    "InternalFailure"
                };
                json!({ "ErrorCode": code, "ErrorMessage": "injected by the fault proxy" })
            } else {
                moto_results.next().unwrap_or_else(|| json!({}))
            }
        })
        .collect();
    stats.lock().unwrap().failed_entries += injected;
    json!({ "FailedEntryCount": moto_failed + injected as u64, "Entries": results })
}

/// A tiny seeded generator (the tests crate has no random number crate).
mod fastrand_like {
    pub(super) struct Rng(u64);

    impl Rng {
        pub(super) fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(super) fn f64(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}

impl Proxy {
    /// An SDK configuration whose clients call through the proxy, with the
    /// SDK's retries off (so every fault reaches the relay) and
    /// [`ATTEMPT_TIMEOUT`] per attempt.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        crate::sdk_config_at(&self.url)
            .into_builder()
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build()
    }
}
