//! A loopback Lambda Runtime API, enough to run a real `lambda_runtime`
//! binary (`outbox-lambda`) outside Lambda and measure it: when it is ready
//! (its first `GET /runtime/invocation/next`, the end of Lambda's init
//! phase), how long each invocation takes, and what it answered.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use crate::http::{Handler, Request, Response, Server};

const API: &str = "/2018-06-01/runtime";
/// The function ARN handed to the runtime.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:outbox-bench";

/// Why an invocation gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeApiError {
    /// The runtime did not answer in time.
    #[error("the runtime did not answer within {0:?}")]
    Timeout(Duration),
    /// The runtime reported an init error.
    #[error("the runtime failed its init: {0}")]
    Init(String),
}

/// What the runtime answered to one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `true` for `/response`, `false` for `/error`.
    pub ok: bool,
    /// The response (or error) body.
    pub body: Vec<u8>,
    /// From handing the event to the runtime to its answer.
    pub wall: Duration,
}

struct Pending {
    request_id: String,
    body: Arc<Vec<u8>>,
    deadline_ms: u128,
}

struct Answer {
    ok: bool,
    body: Vec<u8>,
    at: Instant,
}

struct State {
    queue: mpsc::UnboundedSender<Pending>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// Number of `GET next` received and when the first one arrived.
    nexts: watch::Sender<(u64, Option<Instant>)>,
    init_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake Runtime API; it stops accepting when dropped.
pub struct RuntimeApi {
    server: Server,
    state: Arc<State>,
    invocations: AtomicU64,
}

impl std::fmt::Debug for RuntimeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeApi")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl RuntimeApi {
    /// Starts the API on an ephemeral port of 127.0.0.1.
    pub async fn start() -> io::Result<Self> {
        let (queue, incoming) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            queue,
            incoming: tokio::sync::Mutex::new(incoming),
            waiting: Mutex::new(HashMap::new()),
            nexts: watch::Sender::new((0, None)),
            init_error: Mutex::new(None),
        });
        let shared = Arc::clone(&state);
        let handler: Handler = Arc::new(move |request: Request| {
            let state = Arc::clone(&shared);
            Box::pin(async move { answer(&state, request).await })
        });
        let server = Server::start(handler).await?;
        Ok(Self {
            server,
            state,
            invocations: AtomicU64::new(0),
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` for the runtime: `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.server.addr().to_string()
    }

    /// Waits until the runtime has asked for its first invocation and returns
    /// when it did: the end of its init phase.
    pub async fn ready(&self, timeout: Duration) -> Result<Instant, RuntimeApiError> {
        self.next_requests(1, timeout).await
    }

    /// Waits until the runtime has asked for `count` invocations in all (it
    /// asks for the next one once it answered the previous: it is idle);
    /// returns when it asked for the first.
    pub async fn next_requests(&self, count: u64, timeout: Duration) -> Result<Instant, RuntimeApiError> {
        let mut nexts = self.state.nexts.subscribe();
        let wait = nexts.wait_for(|(n, _)| *n >= count);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(seen)) => Ok(seen.1.unwrap_or_else(Instant::now)),
            _ => match lock(&self.state.init_error).clone() {
                Some(error) => Err(RuntimeApiError::Init(error)),
                None => Err(RuntimeApiError::Timeout(timeout)),
            },
        }
    }

    /// Hands `event` to the runtime and waits for its answer.
    pub async fn invoke(
        &self,
        event: Arc<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Invocation, RuntimeApiError> {
        let n = self.invocations.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("00000000-0000-4000-8000-{n:012x}");
        let (tx, rx) = oneshot::channel();
        lock(&self.state.waiting).insert(request_id.clone(), tx);
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
            + 900_000;
        let started = Instant::now();
        // The receiver lives as long as the state: sending cannot fail.
        let _ = self.state.queue.send(Pending {
            request_id,
            body: event,
            deadline_ms,
        });
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(Invocation {
                ok: answer.ok,
                body: answer.body,
                wall: answer.at.saturating_duration_since(started),
            }),
            _ => Err(RuntimeApiError::Timeout(timeout)),
        }
    }
}

async fn answer(state: &State, request: Request) -> Response {
    let accepted =
        || Response::new(202, r#"{"status":"OK"}"#).with_header("Content-Type", "application/json");
    let Some(route) = request.path.strip_prefix(API) else {
        return Response::new(404, "not a Runtime API path");
    };
    if request.method == "GET" && route == "/invocation/next" {
        state.nexts.send_modify(|(n, first)| {
            *n += 1;
            first.get_or_insert_with(Instant::now);
        });
        let next = state.incoming.lock().await.recv().await;
        let Some(pending) = next else {
            return Response::new(500, "the API is shutting down");
        };
        return Response::new(200, pending.body.as_slice())
            .with_header("Content-Type", "application/json")
            .with_header("Lambda-Runtime-Aws-Request-Id", pending.request_id)
            .with_header("Lambda-Runtime-Deadline-Ms", pending.deadline_ms.to_string())
            .with_header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
            .with_header(
                "Lambda-Runtime-Trace-Id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
            );
    }
    if request.method == "POST" && route == "/init/error" {
        *lock(&state.init_error) = Some(String::from_utf8_lossy(&request.body).into_owned());
        return accepted();
    }
    if request.method == "POST"
        && let Some(rest) = route.strip_prefix("/invocation/")
    {
        let (id, ok) = if let Some(id) = rest.strip_suffix("/response") {
            (id, true)
        } else if let Some(id) = rest.strip_suffix("/error") {
            (id, false)
        } else {
            return Response::new(404, "unknown invocation path");
        };
        if let Some(tx) = lock(&state.waiting).remove(id) {
            let _ = tx.send(Answer {
                ok,
                body: request.body,
                at: Instant::now(),
            });
            return accepted();
        }
        return Response::new(400, "unknown request id");
    }
    Response::new(404, "unknown Runtime API path")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::dynamodb::Event;

    /// Drives the API the way `lambda_runtime` does, over plain HTTP.
    async fn fake_runtime(address: String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        loop {
            stream
                .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let (head, body) = loop {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if body.len() >= length {
                        break (head.to_owned(), body[..length].to_owned());
                    }
                }
            };
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("Lambda-Runtime-Aws-Request-Id: "))
                .unwrap()
                .to_owned();
            let event: Event = serde_json::from_str(&body).unwrap();
            let reply = format!(r#"{{"records":{}}}"#, event.records.len());
            let post = format!(
                "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            );
            stream.write_all(post.as_bytes()).await.unwrap();
            let mut ack = [0u8; 4096];
            let n = stream.read(&mut ack).await.unwrap();
            assert!(String::from_utf8_lossy(&ack[..n]).starts_with("HTTP/1.1 202"));
        }
    }

    #[tokio::test]
    async fn a_runtime_is_seen_ready_then_answers_each_invocation() {
        let api = RuntimeApi::start().await.unwrap();
        assert!(matches!(
            api.ready(Duration::from_millis(50)).await,
            Err(RuntimeApiError::Timeout(_))
        ));
        let runtime = tokio::spawn(fake_runtime(api.address()));
        api.ready(Duration::from_secs(5)).await.unwrap();
        let event = Arc::new(br#"{"Records":[]}"#.to_vec());
        for i in 0..3u64 {
            let invocation = api
                .invoke(Arc::clone(&event), Duration::from_secs(5))
                .await
                .unwrap();
            assert!(invocation.ok);
            assert_eq!(invocation.body, br#"{"records":0}"#);
            api.next_requests(i + 2, Duration::from_secs(5)).await.unwrap();
        }
        runtime.abort();
    }
}
