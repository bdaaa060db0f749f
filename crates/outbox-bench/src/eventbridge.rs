//! A loopback EventBridge-compatible endpoint for benchmarks: it answers
//! `PutEvents` (AWS JSON 1.1, `X-Amz-Target: AWSEvents.PutEvents`) after a
//! configurable latency with every entry successful, and counts the requests,
//! entries and bytes it received. `GET /stats` returns the counts as JSON and
//! `POST /reset` zeroes them, so that a runner in another language can read
//! them too.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::http::{Handler, Request, Response, Server};

/// The `X-Amz-Target` of `PutEvents`.
pub const PUT_EVENTS_TARGET: &str = "AWSEvents.PutEvents";

/// What the endpoint received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStats {
    /// `PutEvents` requests.
    pub requests: u64,
    /// Entries in them.
    pub entries: u64,
    /// Request body bytes.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> EndpointStats {
        EndpointStats {
            requests: self.requests.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.entries.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
struct PutEventsBody {
    #[serde(rename = "Entries")]
    entries: Vec<IgnoredAny>,
}

/// A running endpoint; it stops accepting when dropped.
#[derive(Debug)]
pub struct EventBridgeEndpoint {
    server: Server,
    counters: Arc<Counters>,
}

impl EventBridgeEndpoint {
    /// Starts an endpoint on an ephemeral port of 127.0.0.1 that answers
    /// each `PutEvents` after `latency`.
    pub async fn start(latency: Duration) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), latency).await
    }

    /// Starts an endpoint on `addr`.
    pub async fn start_on(addr: SocketAddr, latency: Duration) -> io::Result<Self> {
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        let handler: Handler = Arc::new(move |request: Request| {
            let counters = Arc::clone(&shared);
            Box::pin(async move { answer(&counters, latency, request).await })
        });
        let server = Server::start_on(addr, handler).await?;
        Ok(Self { server, counters })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// What it received so far.
    pub fn stats(&self) -> EndpointStats {
        self.counters.snapshot()
    }

    /// Zeroes the counts.
    pub fn reset(&self) {
        self.counters.reset();
    }
}

fn json_error(status: u16, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": kind, "message": message }).to_string();
    Response::new(status, body).with_header("Content-Type", "application/x-amz-json-1.1")
}

async fn answer(counters: &Counters, latency: Duration, request: Request) -> Response {
    let arrived = std::time::Instant::now();
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/stats") => {
            let body = serde_json::to_string(&counters.snapshot()).unwrap_or_default();
            return Response::new(200, body).with_header("Content-Type", "application/json");
        }
        ("POST", "/reset") => {
            counters.reset();
            return Response::new(200, "{}").with_header("Content-Type", "application/json");
        }
        _ => {}
    }
    if request.header("x-amz-target") != Some(PUT_EVENTS_TARGET) {
        return json_error(
            400,
            "UnknownOperationException",
            "this endpoint only answers PutEvents",
        );
    }
    let entries = match serde_json::from_slice::<PutEventsBody>(&request.body) {
        Ok(body) => body.entries.len(),
        Err(e) => return json_error(400, "SerializationException", &e.to_string()),
    };
    counters.requests.fetch_add(1, Ordering::Relaxed);
    counters.entries.fetch_add(entries as u64, Ordering::Relaxed);
    counters
        .bytes
        .fetch_add(request.body.len() as u64, Ordering::Relaxed);
    if !latency.is_zero() {
        wait_until(arrived + latency).await;
    }
    Response::new(200, put_events_response(entries))
        .with_header("Content-Type", "application/x-amz-json-1.1")
        .with_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
}

/// Waits until `deadline`, to within about a tenth of a millisecond: tokio's
/// timer has millisecond ticks and rounds every sleep up (a 5 ms latency
/// would be 6 ms), so the last stretch is a thread sleep, which Linux times
/// to tens of microseconds.
async fn wait_until(deadline: std::time::Instant) {
    let coarse = deadline.saturating_duration_since(std::time::Instant::now());
    if coarse > Duration::from_millis(2) {
        tokio::time::sleep(coarse - Duration::from_millis(2)).await;
    }
    let rest = deadline.saturating_duration_since(std::time::Instant::now());
    if !rest.is_zero() {
        // A failed join only means the sleep was cut short.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// Round trips of `body` as a `PutEvents` request to the endpoint at `url`
/// (`http://127.0.0.1:PORT`), one after the other on one keep-alive
/// connection, through a bare HTTP/1.1 client (no SDK, no signing): the time
/// the endpoint itself takes, network included, which is the floor of any
/// client's call.
pub async fn bare_round_trips(url: &str, body: &[u8], n: usize) -> io::Result<Vec<Duration>> {
    use tokio::io::AsyncWriteExt;

    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: {PUT_EVENTS_TARGET}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let mut times = Vec::with_capacity(n);
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..n {
        let started = std::time::Instant::now();
        stream.write_all(&request).await?;
        buf.clear();
        // The head, then as much body as its Content-Length says.
        let (end, length) = loop {
            read_more(&mut stream, &mut buf).await?;
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while buf.len() < end + length {
            read_more(&mut stream, &mut buf).await?;
        }
        if !buf.starts_with(b"HTTP/1.1 200") {
            return Err(io::Error::other(format!(
                "the endpoint answered {}",
                String::from_utf8_lossy(&buf[..buf.len().min(80)])
            )));
        }
        times.push(started.elapsed());
    }
    Ok(times)
}

/// Appends what the next read of `stream` gives to `buf`; the end of the
/// stream is an error.
async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    use tokio::io::AsyncReadExt;

    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the endpoint closed the connection",
        ));
    }
    buf.extend_from_slice(&chunk[..read]);
    Ok(())
}

/// The body of a `PutEvents` response with `entries` successful entries.
pub fn put_events_response(entries: usize) -> String {
    let mut body = String::with_capacity(40 + entries * 60);
    body.push_str(r#"{"FailedEntryCount":0,"Entries":["#);
    for i in 0..entries {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"EventId":"{:08x}-0000-4000-8000-{:012x}"}}"#,
            fastrand::u32(..),
            i
        ));
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::{EventSink, OutboxEvent, SystemClock};
    use outbox_eventbridge::EventBridgeSink;

    #[test]
    fn the_response_has_one_successful_entry_per_request_entry() {
        let body: serde_json::Value = serde_json::from_str(&put_events_response(3)).unwrap();
        assert_eq!(body["FailedEntryCount"], 0);
        assert_eq!(body["Entries"].as_array().unwrap().len(), 3);
        assert!(
            body["Entries"][2]["EventId"]
                .as_str()
                .unwrap()
                .ends_with("000000000002")
        );
    }

    #[tokio::test]
    async fn a_bare_client_round_trip_takes_the_latency_and_is_counted() {
        let endpoint = EventBridgeEndpoint::start(Duration::from_millis(3))
            .await
            .unwrap();
        let body = br#"{"Entries":[{"Source":"s","DetailType":"d","Detail":"{}"},{"Source":"s","DetailType":"d","Detail":"{}"}]}"#;
        let times = bare_round_trips(&endpoint.url(), body, 3).await.unwrap();
        assert_eq!(times.len(), 3);
        assert!(times.iter().all(|t| *t >= Duration::from_millis(3)), "{times:?}");
        assert_eq!((endpoint.stats().requests, endpoint.stats().entries), (3, 6));
    }

    #[tokio::test]
    async fn the_sdk_sink_publishes_to_it_and_it_counts_what_it_received() {
        let endpoint = EventBridgeEndpoint::start(Duration::from_millis(5))
            .await
            .unwrap();
        let sink = EventBridgeSink::new(
            aws_sdk_eventbridge::Client::new(&crate::harness::sdk_config_at(&endpoint.url())),
            "bench-bus",
        );
        let events: Vec<OutboxEvent> = (0..7)
            .map(|i| {
                OutboxEvent::builder("bench", "Happened")
                    .aggregate("Thing", format!("t-{i}"))
                    .sequence(1)
                    .payload(&serde_json::json!({ "i": i }))
                    .build(&SystemClock)
                    .unwrap()
            })
            .collect();
        let refs: Vec<&OutboxEvent> = events.iter().collect();
        let started = std::time::Instant::now();
        let results = sink.publish(&refs).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(5),
            "the latency is applied"
        );
        assert!(results.iter().all(|r| *r == outbox_core::EntryResult::Published));
        let stats = endpoint.stats();
        assert_eq!((stats.requests, stats.entries), (1, 7));
        assert!(stats.bytes > 0);
        endpoint.reset();
        assert_eq!(endpoint.stats(), EndpointStats::default());
    }
}
