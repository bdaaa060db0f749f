//! Keep-alive HTTP/1.1 connections to the one endpoint of a
//! [`PutEventsClient`](crate::PutEventsClient), each carrying one exchange
//! at a time.
//!
//! hyper-util's general-purpose client did the same with more per request:
//! its pool is keyed by scheme and authority (a hashed lookup under a lock),
//! and each request's future is boxed. Here there is one endpoint, so
//! the pool is a list: the most recently used idle connection is taken
//! first (its buffers are warm), a new one is opened when none is left, and
//! one whose peer closed it or that sat idle too long is dropped when met.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use outbox_core::error_chain;
use tower_service::Service;

/// The sending half of one connection.
type Sender = SendRequest<Full<Bytes>>;

/// Why an exchange did not get an answer's head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened (TCP, TLS or the HTTP handshake).
    Connect(String),
    /// The connection failed once the request was handed to it.
    Dispatch(String),
}

/// The connections of one client.
pub(crate) struct Connections {
    connector: HttpsConnector<HttpConnector>,
    /// Where every connection goes: the endpoint's scheme and authority.
    endpoint: Uri,
    /// Longest time a connection may sit idle and still be used.
    idle_timeout: Duration,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<(Sender, Instant)>>,
}

/// A connection lent for one exchange. [`release`](Self::release) it once
/// the answer's body has been read, to use it again; dropped otherwise (an
/// exchange cut short), it closes.
pub(crate) struct Lease<'a> {
    pool: &'a Connections,
    sender: Sender,
}

impl Lease<'_> {
    /// Gives the connection back to the pool, unless its peer closed it.
    pub(crate) fn release(self) {
        if !self.sender.is_closed() {
            self.pool.lock().push((self.sender, Instant::now()));
        }
    }
}

impl Connections {
    /// Connections to `endpoint` (its scheme and authority) through
    /// `connector`; an idle one older than `idle_timeout` is not used.
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        endpoint: Uri,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            connector,
            endpoint,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` on an idle connection, or on a new one when none is
    /// left, its URI written in origin form (`/path?query`) as HTTP/1.1
    /// asks of a request to an origin server. A request that an idle
    /// connection closed before taking (the peer ended a keep-alive
    /// connection) goes on to the next connection, so a stale connection
    /// never costs the caller a failed call.
    pub(crate) async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease<'_>), SendError> {
        let origin = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(origin);
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect(
                    "the new connection closed before the request".into(),
                ));
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lease { pool: self, sender })),
                Err(mut failed) => match failed.take_message() {
                    // Not sent: it can go on another connection.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Dispatch(error_chain(failed.error()))),
                },
            }
        }
    }

    /// The most recently used idle connection that is open and has not
    /// been idle too long; the others met on the way are dropped.
    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.lock();
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < self.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    /// A new connection, its task spawned on the current runtime.
    async fn connect(&self) -> Result<Sender, SendError> {
        let mut connector = self.connector.clone();
        let connect = |e: &(dyn std::error::Error + 'static)| SendError::Connect(error_chain(e));
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| connect(&*e))?;
        let io = connector
            .call(self.endpoint.clone())
            .await
            .map_err(|e| connect(&*e))?;
        let (sender, connection) = http1::handshake(io).await.map_err(|e| connect(&e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error_chain(&error), "PutEvents connection ended");
            }
        });
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Sender, Instant)>> {
        // A list of values pushed and popped whole: a panic elsewhere
        // cannot leave it half-written.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
