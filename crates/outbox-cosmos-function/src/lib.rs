//! The outbox relay as an Azure Functions **custom handler** for the Cosmos
//! DB trigger.
//!
//! The Functions host runs the trigger (its own change-feed processor and
//! lease container) and POSTs each batch of changed documents to this
//! process on `FUNCTIONS_CUSTOMHANDLER_PORT`. The handler decodes them with
//! the same [`CosmosChangeDecoder`] as the standalone processor, relays them
//! with the shared [`Relay`] to EventBridge (quarantine: SQS), and answers
//! 200 only when every document was delivered or quarantined. Any other
//! answer fails the invocation; the function's retry policy
//! (`infra/azure/relay/function.json`, infinite retries) delivers the same
//! batch again, and the trigger's lease checkpoint does not move until it
//! succeeds: at-least-once.
//!
//! ```no_run
//! use outbox_cosmos_function::{FunctionConfig, build_handler, serve};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = FunctionConfig::from_env()?;
//! let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let handler = build_handler(&config, &sdk);
//! let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
//! serve(listener, std::sync::Arc::new(handler), std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use outbox_core::{Env, EventSink, Quarantine, Relay, RelayConfig};
use outbox_cosmos::{CosmosChangeDecoder, CosmosOutboxSchema, InvocationResponse, relay_trigger_invocation};
use outbox_eventbridge::{EventBridgeConfig, EventBridgeSink, SqsQuarantine};

pub use outbox_core::ConfigError;
pub use outbox_core::config::{
    ENV_DEADLINE_MARGIN_MS, ENV_MAX_CONCURRENCY, ENV_MAX_RETRIES, ENV_RETRY_BASE_MS, ENV_RETRY_MAX_MS,
};
pub use outbox_eventbridge::{ENV_EVENT_BUS_NAME, ENV_MAX_REQUEST_BYTES, ENV_QUARANTINE_QUEUE_URL};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Port the Functions host expects the custom handler on. Set by the host.
pub const ENV_PORT: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
/// The monitored container's name (also used by `function.json`; a label in
/// quarantined records). Required.
pub const ENV_CONTAINER: &str = "OUTBOX_COSMOS_CONTAINER";
/// Marker field of outbox documents (default `outbox`).
pub const ENV_MARKER_FIELD: &str = "OUTBOX_COSMOS_MARKER_FIELD";
/// Name of the trigger binding in `function.json` (default `documents`).
pub const ENV_TRIGGER_BINDING: &str = "OUTBOX_COSMOS_TRIGGER_BINDING";
/// Time one invocation may take, in milliseconds (default 300000: the
/// `functionTimeout` of `host.json`).
pub const ENV_INVOCATION_TIMEOUT_MS: &str = "OUTBOX_INVOCATION_TIMEOUT_MS";

/// The variables the deployment must set (the host sets [`ENV_PORT`]).
pub const REQUIRED_VARIABLES: &[&str] = &[ENV_EVENT_BUS_NAME, ENV_QUARANTINE_QUEUE_URL, ENV_CONTAINER];

/// The custom handler's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionConfig {
    /// Port to listen on (127.0.0.1).
    pub port: u16,
    /// The bus, the quarantine queue and the request limits.
    pub eventbridge: EventBridgeConfig,
    /// The monitored container (a label).
    pub container: String,
    /// How outbox documents are recognised.
    pub marker_field: String,
    /// The trigger binding's name.
    pub trigger_binding: String,
    /// Time one invocation may take.
    pub invocation_timeout: Duration,
    /// Publishing and retries.
    pub relay: RelayConfig,
}

impl FunctionConfig {
    /// Reads the configuration through `lookup` (a variable name to its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(lookup);
        let port = u16::try_from(env.number(ENV_PORT, 0, 0..=u64::from(u16::MAX))?).unwrap_or(0);
        if port == 0 {
            return Err(ConfigError::Missing { name: ENV_PORT });
        }
        Ok(Self {
            port,
            eventbridge: EventBridgeConfig::from_env(&env)?,
            container: env.required(ENV_CONTAINER)?,
            marker_field: env.text(ENV_MARKER_FIELD).unwrap_or_else(|| "outbox".into()),
            trigger_binding: env
                .text(ENV_TRIGGER_BINDING)
                .unwrap_or_else(|| "documents".into()),
            invocation_timeout: env.millis(ENV_INVOCATION_TIMEOUT_MS, 300_000, 1000..=24 * 3600 * 1000)?,
            relay: RelayConfig::from_env(&env)?,
        })
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// Handles trigger invocations: decode, relay, answer.
#[derive(Debug)]
pub struct TriggerHandler<S, Q> {
    relay: Relay<S, Q>,
    decoder: CosmosChangeDecoder,
    binding: String,
    timeout: Duration,
}

impl<S: EventSink, Q: Quarantine> TriggerHandler<S, Q> {
    /// A handler reading documents from `Data.<binding>`, relaying them with
    /// `relay` within `timeout` per invocation.
    pub fn new(
        relay: Relay<S, Q>,
        decoder: CosmosChangeDecoder,
        binding: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            relay,
            decoder,
            binding: binding.into(),
            timeout,
        }
    }

    /// The relay.
    pub fn relay(&self) -> &Relay<S, Q> {
        &self.relay
    }

    /// Handles one invocation request body.
    pub async fn handle(&self, body: &[u8]) -> InvocationResponse {
        let deadline = Instant::now() + self.timeout;
        relay_trigger_invocation(&self.relay, &self.decoder, body, &self.binding, Some(deadline))
            .await
            .response
    }
}

/// The production handler: EventBridge sink and SQS quarantine built from
/// the SDK configuration (endpoints, credentials, retries).
pub fn build_handler(
    config: &FunctionConfig,
    sdk: &aws_config::SdkConfig,
) -> TriggerHandler<EventBridgeSink, SqsQuarantine> {
    let sink = config.eventbridge.sink(sdk);
    let quarantine = config.eventbridge.quarantine(
        sdk,
        &config.eventbridge.quarantine_queue_url,
        &format!("cosmos:{}", config.container),
    );
    // Decoding needs only the marker; the partition key property is not read.
    let schema = CosmosOutboxSchema::new("pk").with_marker_field(&config.marker_field);
    TriggerHandler::new(
        Relay::new(sink, quarantine, config.relay.clone()),
        CosmosChangeDecoder::new(schema),
        &config.trigger_binding,
        config.invocation_timeout,
    )
}

/// Serves invocations on `listener` until `shutdown` completes: every POST
/// is a trigger invocation (the path is the function's name); anything else
/// is 405. On shutdown no new connection is taken, and the invocations in
/// flight get their answer: their connections are drained for at most the
/// handler's invocation timeout, after which they are dropped (delivery
/// stays at-least-once: the host retries an unanswered invocation).
pub async fn serve<S, Q>(
    listener: TcpListener,
    handler: Arc<TriggerHandler<S, Q>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: EventSink + 'static,
    Q: Quarantine + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let grace = handler.timeout;
    tracing::info!(address = %listener.local_addr()?, "custom handler listening");
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = Arc::clone(&handler);
        let service = hyper::service::service_fn(move |request| {
            let handler = Arc::clone(&handler);
            async move { Ok::<_, Infallible>(respond(&handler, request).await) }
        });
        let connection =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let in_flight = connections.count();
    tracing::info!(
        in_flight,
        grace_ms = grace.as_millis() as u64,
        "custom handler stopping"
    );
    if tokio::time::timeout(grace, connections.shutdown()).await.is_err() {
        tracing::warn!("invocations still in flight after the grace period; dropped");
    }
    Ok(())
}

async fn respond<S: EventSink, Q: Quarantine>(
    handler: &TriggerHandler<S, Q>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "only POST invocations are served".into(),
        );
    }
    let path = request.uri().path().to_owned();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            tracing::warn!(error = %error, "reading the invocation failed");
            return reply(
                StatusCode::BAD_REQUEST,
                "the request body could not be read".into(),
            );
        }
    };
    let span =
        tracing::info_span!("invocation", function = %path.trim_start_matches('/'), bytes = body.len());
    let response = tracing::Instrument::instrument(handler.handle(&body), span).await;
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(status, response.to_json())
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Completes on SIGINT or SIGTERM (the Functions host stops its custom
/// handler with SIGTERM when it scales in or recycles).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = terminate.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::fakes::{Fault, FlakySink, RecordingQuarantine, RecordingSink};
    use outbox_core::{FailureClass, OutboxEvent, SystemClock};
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            (ENV_PORT, "7071".to_string()),
            (ENV_EVENT_BUS_NAME, "orders-bus".to_string()),
            (ENV_QUARANTINE_QUEUE_URL, "http://127.0.0.1:1/q".to_string()),
            (ENV_CONTAINER, "orders".to_string()),
        ])
    }

    fn parse(vars: &HashMap<&'static str, String>) -> Result<FunctionConfig, ConfigError> {
        FunctionConfig::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_required_variables_are_set() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.port, 7071);
        assert_eq!(c.marker_field, "outbox");
        assert_eq!(c.trigger_binding, "documents");
        assert_eq!(c.invocation_timeout, Duration::from_secs(300));
        assert_eq!(c.eventbridge.max_request_bytes, 262_144);
        assert_eq!(c.relay, RelayConfig::default());
    }

    #[test]
    fn each_missing_or_invalid_variable_is_named() {
        for name in [
            ENV_PORT,
            ENV_EVENT_BUS_NAME,
            ENV_QUARANTINE_QUEUE_URL,
            ENV_CONTAINER,
        ] {
            let mut vars = base();
            vars.remove(name);
            assert_eq!(parse(&vars).unwrap_err(), ConfigError::Missing { name });
        }
        for (name, value) in [
            (ENV_PORT, "70000"),
            (ENV_MAX_CONCURRENCY, "0"),
            (ENV_INVOCATION_TIMEOUT_MS, "x"),
        ] {
            let mut vars = base();
            vars.insert(name, value.into());
            let err = parse(&vars).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, value: v, .. } if *n == name && v == value),
                "{err}"
            );
        }
    }

    #[test]
    fn the_deployment_sets_every_required_variable() {
        let bicep = include_str!("../../../infra/azure/main.bicep");
        let function = include_str!("../../../infra/azure/relay/function.json");
        for name in REQUIRED_VARIABLES {
            assert!(
                bicep.contains(&format!("name: '{name}'")),
                "main.bicep does not set {name}"
            );
        }
        let function: Value = serde_json::from_str(function).unwrap();
        let binding = &function["bindings"][0];
        assert_eq!(binding["type"], "cosmosDBTrigger");
        assert_eq!(
            binding["name"], "documents",
            "the default of {ENV_TRIGGER_BINDING}"
        );
        assert_eq!(binding["containerName"], format!("%{ENV_CONTAINER}%"));
        assert_eq!(
            function["retry"]["maxRetryCount"], -1,
            "failed batches are retried until they pass"
        );
    }

    fn documents(n: u64) -> (Vec<OutboxEvent>, Value) {
        let schema = CosmosOutboxSchema::new("pk");
        let events: Vec<OutboxEvent> = (1..=n)
            .map(|i| {
                OutboxEvent::builder("com.example.orders", "OrderPlaced")
                    .aggregate("Order", "o-1")
                    .sequence(i)
                    .payload(&json!({ "i": i }))
                    .build(&SystemClock)
                    .unwrap()
            })
            .collect();
        let mut docs: Vec<Value> = events
            .iter()
            .map(|e| schema.to_document(e, "Order#o-1"))
            .collect();
        docs.insert(0, json!({"id": "o-1", "pk": "Order#o-1", "status": "PLACED"}));
        let body = json!({
            "Data": { "documents": Value::Array(docs).to_string() },
            "Metadata": { "sys": { "MethodName": "relay", "UtcNow": "2026-11-23T10:00:00Z" } }
        });
        (events, body)
    }

    /// POSTs `body` the way the Functions host does and returns the status and JSON answer.
    async fn post(port: u16, path: &str, body: &str) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let status: u16 = raw.split(' ').nth(1).unwrap().parse().unwrap();
        let json = raw.split("\r\n\r\n").nth(1).unwrap();
        (status, serde_json::from_str(json).unwrap_or(Value::Null))
    }

    fn relay_config() -> RelayConfig {
        RelayConfig {
            retry: outbox_core::RetryPolicy {
                max_retries: 1,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
            },
            ..RelayConfig::default()
        }
    }

    async fn start<S: EventSink + 'static>(sink: S) -> (u16, Arc<TriggerHandler<S, RecordingQuarantine>>) {
        let handler = Arc::new(TriggerHandler::new(
            Relay::new(sink, RecordingQuarantine::default(), relay_config()),
            CosmosChangeDecoder::new(CosmosOutboxSchema::new("pk")),
            "documents",
            Duration::from_secs(10),
        ));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(listener, Arc::clone(&handler), std::future::pending()));
        (port, handler)
    }

    /// A sink that takes its time.
    struct SlowSink(Duration);

    impl EventSink for SlowSink {
        fn limits(&self) -> outbox_core::ChunkLimits {
            outbox_core::ChunkLimits {
                max_entries: 10,
                max_bytes: 256 * 1024,
            }
        }
        fn entry_size(&self, event: &outbox_core::OutboxEvent) -> usize {
            event.json_len()
        }
        async fn publish(
            &self,
            events: &[&outbox_core::OutboxEvent],
        ) -> Result<Vec<outbox_core::EntryResult>, outbox_core::SinkError> {
            tokio::time::sleep(self.0).await;
            Ok(vec![outbox_core::EntryResult::Published; events.len()])
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invocation_in_flight_at_shutdown_gets_its_answer() {
        let handler = Arc::new(TriggerHandler::new(
            Relay::new(
                SlowSink(Duration::from_millis(400)),
                RecordingQuarantine::default(),
                relay_config(),
            ),
            CosmosChangeDecoder::new(CosmosOutboxSchema::new("pk")),
            "documents",
            Duration::from_secs(10),
        ));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, handler, async move {
            let _ = stopped.await;
        }));
        let (_, body) = documents(3);
        let request = tokio::spawn(async move { post(port, "/relay", &body.to_string()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let (status, answer) = request.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["ReturnValue"]["published"], 3);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns once the invocation is answered")
            .unwrap()
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "no new connection is taken after shutdown"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invocation_over_http_is_relayed_and_answered_200() {
        let (port, handler) = start(RecordingSink::default()).await;
        let (events, body) = documents(3);
        let (status, answer) = post(port, "/relay", &body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["ReturnValue"]["published"], 3);
        assert_eq!(answer["ReturnValue"]["skipped"], 1);
        assert_eq!(answer["Outputs"], json!({}));
        let published: Vec<_> = handler
            .relay()
            .sink()
            .published()
            .iter()
            .map(OutboxEvent::id)
            .collect();
        assert_eq!(published, events.iter().map(OutboxEvent::id).collect::<Vec<_>>());
        let (status, _) = post(port, "/relay", r#"{"Data": {}}"#).await;
        assert_eq!(status, 400, "a misconfigured binding fails the invocation");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_undelivered_event_answers_500_so_the_host_retries_the_batch() {
        let (events, body) = documents(2);
        let stuck = events[1].id();
        let (port, handler) = start(FlakySink::new(move |e, _| {
            if e.id() == stuck {
                Fault::Entry(FailureClass::Transient, "InternalFailure")
            } else {
                Fault::Accept
            }
        }))
        .await;
        let (status, answer) = post(port, "/relay", &body.to_string()).await;
        assert_eq!(status, 500);
        assert_eq!(answer["ReturnValue"]["failed"], 1);
        assert!(
            answer["Logs"][0].as_str().unwrap().contains("retries"),
            "{answer}"
        );
        assert_eq!(handler.relay().sink().accepted().len(), 1);
    }
}
