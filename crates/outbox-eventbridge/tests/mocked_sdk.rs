//! The EventBridge sink and the SQS quarantine over SDK clients mocked with
//! `aws-smithy-mocks`, alone and driven by the core relay.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::sync::{Arc, Mutex};

use aws_sdk_eventbridge::config::http::{HttpRequest, HttpResponse};
use aws_sdk_eventbridge::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::config::{
    BehaviorVersion, ConfigBag, Credentials, HttpClient, Intercept, Region, RuntimeComponents,
};
use aws_sdk_eventbridge::error::{BoxError, ErrorMetadata};
use aws_sdk_eventbridge::operation::put_events::{PutEventsError, PutEventsOutput};
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_sdk_sqs::operation::send_message::{SendMessageError, SendMessageInput, SendMessageOutput};
use aws_sdk_sqs::types::error::QueueDoesNotExist;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_types::body::SdkBody;
use chrono::{DateTime, TimeZone, Utc};
use outbox_core::fakes::RecordingQuarantine;
use outbox_core::{
    Decoded, EntryResult, EventSink, FailureClass, FixedClock, OutboxEvent, Quarantine, QuarantinedRecord,
    Relay, RelayConfig, RelayRecord,
};
use outbox_eventbridge::{
    ATTRIBUTE_EVENT_ID, ATTRIBUTE_EVENT_TYPE, ATTRIBUTE_REASON, EventBridgeSink, QuarantineMessage,
    SqsQuarantine, entry_size, to_put_events_entry,
};
use serde_json::json;

const BUS: &str = "orders-bus";
const QUEUE: &str = "https://sqs.test/000000000000/outbox-quarantine";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 10, 0, 0).unwrap()
}

fn event(i: usize) -> OutboxEvent {
    OutboxEvent::builder("com.example.orders", "OrderPlaced")
        .aggregate("Order", format!("o-{i}"))
        .sequence(1)
        .payload(&json!({ "n": i }))
        .build(&FixedClock::new(t0()))
        .unwrap()
}

fn records(events: &[OutboxEvent]) -> Vec<RelayRecord> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| RelayRecord {
            position: format!("{:04}", i + 1),
            decoded: Decoded::Event(Box::new(e.clone())),
        })
        .collect()
}

/// An EventBridge client answering with `rules`, without the SDK's own
/// retries so that each failure reaches the sink.
fn eventbridge(mode: RuleMode, rules: &[&Rule]) -> aws_sdk_eventbridge::Client {
    mock_client!(aws_sdk_eventbridge, mode, rules, |c| c
        .retry_config(RetryConfig::disabled()))
}

fn sqs(rules: &[&Rule]) -> aws_sdk_sqs::Client {
    mock_client!(aws_sdk_sqs, RuleMode::Sequential, rules, |c| c
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled()))
}

type Captured<T> = Arc<Mutex<Vec<T>>>;

fn ok() -> PutEventsResultEntry {
    PutEventsResultEntry::builder().event_id("generated-id").build()
}

fn failed(code: &str, message: &str) -> PutEventsResultEntry {
    PutEventsResultEntry::builder()
        .error_code(code)
        .error_message(message)
        .build()
}

fn output(entries: Vec<PutEventsResultEntry>) -> PutEventsOutput {
    let failed = entries.iter().filter(|e| e.error_code().is_some()).count();
    PutEventsOutput::builder()
        .failed_entry_count(i32::try_from(failed).unwrap())
        .set_entries(Some(entries))
        .build()
}

/// What the wire bus answers to one request, from its number of entries:
/// an HTTP status and a body.
type Answer = Box<dyn Fn(usize) -> (u16, String) + Send + Sync>;

/// A `PutEvents` endpoint at the HTTP level: it keeps the body of every
/// request exactly as the SDK would send it (the sink writes its own body),
/// and answers with its planned answers in turn, then by accepting every
/// entry. Unlike a mocked rule, which sees the SDK input, it sees the entries.
#[derive(Clone, Default)]
struct Wire {
    bodies: Captured<serde_json::Value>,
    plan: Arc<Mutex<std::collections::VecDeque<Answer>>>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").finish_non_exhaustive()
    }
}

impl Wire {
    /// Plans the answer to the next request not yet answered by a plan.
    fn then(self, answer: impl Fn(usize) -> (u16, String) + Send + Sync + 'static) -> Self {
        self.plan.lock().unwrap().push_back(Box::new(answer));
        self
    }

    /// The entries of every request received, as JSON objects.
    fn requests(&self) -> Vec<Vec<serde_json::Value>> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|body| body["Entries"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// An EventBridge client over this endpoint, without the SDK's retries.
    fn client(&self) -> aws_sdk_eventbridge::Client {
        let config = aws_sdk_eventbridge::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::new("AKID", "secret", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .http_client(self.clone())
            .build();
        aws_sdk_eventbridge::Client::from_conf(config)
    }
}

/// The body of a 200 response accepting `n` entries.
fn accepted(n: usize) -> String {
    let entries: Vec<_> = (0..n).map(|i| json!({ "EventId": format!("id-{i}") })).collect();
    json!({ "FailedEntryCount": 0, "Entries": entries }).to_string()
}

impl HttpConnector for Wire {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body: serde_json::Value = serde_json::from_slice(request.body().bytes().unwrap_or_default())
            .expect("the request body is JSON");
        let n = body["Entries"].as_array().map_or(0, Vec::len);
        assert_eq!(
            request.headers().get("content-length"),
            Some(
                request
                    .body()
                    .bytes()
                    .unwrap_or_default()
                    .len()
                    .to_string()
                    .as_str()
            ),
            "Content-Length is the body's"
        );
        self.bodies.lock().unwrap().push(body);
        let (status, text) = match self.plan.lock().unwrap().pop_front() {
            Some(answer) => answer(n),
            None => (200, accepted(n)),
        };
        HttpConnectorFuture::ready(Ok(http_error(status, &text)))
    }
}

impl HttpClient for Wire {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// Checks that `entry`, as sent, is the entry of `event` on [`BUS`].
fn assert_entry_of(entry: &serde_json::Value, event: &OutboxEvent) {
    let expected = to_put_events_entry(event, BUS);
    assert_eq!(entry["EventBusName"], BUS);
    assert_eq!(entry["Source"].as_str(), expected.source());
    assert_eq!(entry["DetailType"].as_str(), expected.detail_type());
    assert_eq!(entry["Detail"].as_str(), expected.detail());
    assert_eq!(
        OutboxEvent::from_json(entry["Detail"].as_str().unwrap()).unwrap(),
        *event
    );
    assert_eq!(entry["Time"].as_i64(), Some(event.occurred_at().timestamp()));
    assert_eq!(entry["TraceHeader"].as_str(), expected.trace_header());
}

fn http_error(status: u16, body: &str) -> HttpResponse {
    HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body))
}

// --- the sink alone ---

#[tokio::test]
async fn entries_are_built_from_the_events_for_the_bus() {
    let wire = Wire::default();
    let sink = EventBridgeSink::new(wire.client(), BUS);
    let traced = OutboxEvent::builder("com.example.orders", "OrderShipped")
        .aggregate("Order", "o-9")
        .sequence(4)
        .payload(&json!({ "carrier": "ups" }))
        .trace_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .build(&FixedClock::new(t0()))
        .unwrap();
    let events = [event(1), traced];
    let refs: Vec<&OutboxEvent> = events.iter().collect();

    let results = sink.publish(&refs).await.unwrap();

    assert_eq!(results, vec![EntryResult::Published, EntryResult::Published]);
    let requests = wire.requests();
    assert_eq!(requests.len(), 1);
    let entries = &requests[0];
    assert_eq!(entries.len(), 2);
    for (entry, event) in entries.iter().zip(&events) {
        assert_entry_of(entry, event);
    }
    assert_eq!(entries[0].get("TraceHeader"), None);
    assert_eq!(
        entries[1]["TraceHeader"],
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
    );
    assert_eq!(sink.entry_size(&events[0]), entry_size(&events[0]));
    assert_eq!(sink.limits().max_entries, 10);
    assert_eq!(sink.limits().max_bytes, 256 * 1024);
    assert_eq!(sink.with_max_request_bytes(1 << 20).limits().max_bytes, 1 << 20);
}

#[tokio::test]
async fn a_200_with_failed_entries_yields_one_result_per_entry() {
    let rule = mock!(aws_sdk_eventbridge::Client::put_events).then_output(|| {
        output(vec![
            ok(),
            failed("ThrottlingException", "Rate exceeded"),
            failed("MalformedDetail", "Detail is malformed"),
            failed("BrandNewErrorCode", "something new"),
        ])
    });
    let sink = EventBridgeSink::new(eventbridge(RuleMode::Sequential, &[&rule]), BUS);
    let events: Vec<OutboxEvent> = (0..4).map(event).collect();
    let refs: Vec<&OutboxEvent> = events.iter().collect();

    let results = sink.publish(&refs).await.unwrap();

    let failed = |class, code: &str, message: &str| EntryResult::Failed {
        class,
        code: code.into(),
        message: message.into(),
    };
    assert_eq!(
        results,
        vec![
            EntryResult::Published,
            failed(FailureClass::Transient, "ThrottlingException", "Rate exceeded"),
            failed(FailureClass::Permanent, "MalformedDetail", "Detail is malformed"),
            failed(FailureClass::Transient, "BrandNewErrorCode", "something new"),
        ]
    );
}

#[tokio::test]
async fn whole_call_throttling_on_the_wire_is_transient() {
    let rule = mock!(aws_sdk_eventbridge::Client::put_events).then_http_response(|| {
        http_error(
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        )
    });
    let sink = EventBridgeSink::new(eventbridge(RuleMode::Sequential, &[&rule]), BUS);
    let e = event(1);

    let error = sink.publish(&[&e]).await.unwrap_err();

    assert_eq!(error.class, FailureClass::Transient);
    assert_eq!(error.code, "ThrottlingException");
    assert_eq!(error.message, "Rate exceeded");
}

#[tokio::test]
async fn a_503_without_a_body_is_transient() {
    let rule = mock!(aws_sdk_eventbridge::Client::put_events).then_http_response(|| http_error(503, ""));
    let sink = EventBridgeSink::new(eventbridge(RuleMode::Sequential, &[&rule]), BUS);
    let e = event(1);

    let error = sink.publish(&[&e]).await.unwrap_err();

    assert_eq!(error.class, FailureClass::Transient, "{error:?}");
}

#[tokio::test]
async fn access_denied_and_a_missing_bus_are_permanent() {
    let denied = mock!(aws_sdk_eventbridge::Client::put_events).then_error(|| {
        PutEventsError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not allowed")
                .build(),
        )
    });
    let missing = mock!(aws_sdk_eventbridge::Client::put_events).then_http_response(|| {
        http_error(
            400,
            r#"{"__type":"ResourceNotFoundException","message":"Event bus orders-bus does not exist."}"#,
        )
    });
    let sink = EventBridgeSink::new(eventbridge(RuleMode::Sequential, &[&denied, &missing]), BUS);
    let e = event(1);

    let error = sink.publish(&[&e]).await.unwrap_err();
    assert_eq!(
        (error.class, error.code.as_str(), error.message.as_str()),
        (FailureClass::Permanent, "AccessDeniedException", "not allowed")
    );
    let error = sink.publish(&[&e]).await.unwrap_err();
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Permanent, "ResourceNotFoundException")
    );
}

/// Fails every request before it is sent, as a broken connection would.
#[derive(Debug)]
struct NoConnection;

impl Intercept for NoConnection {
    fn name(&self) -> &'static str {
        "NoConnection"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        Err("connection refused".into())
    }
}

#[tokio::test]
async fn a_request_that_never_reaches_the_service_is_a_transient_dispatch_failure() {
    // A modeled output would be put in place of any error; a raw response is
    // only returned by the (never reached) HTTP client.
    let rule = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_http_response(|| http_error(200, r#"{"FailedEntryCount":0,"Entries":[{"EventId":"e"}]}"#));
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(RetryConfig::disabled())
        .interceptor(NoConnection));
    let sink = EventBridgeSink::new(client, BUS);
    let e = event(1);

    let error = sink.publish(&[&e]).await.unwrap_err();

    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Transient, "DispatchFailure")
    );
    assert!(error.message.contains("connection refused"), "{}", error.message);
}

#[tokio::test]
async fn an_empty_chunk_makes_no_call_and_an_overfull_one_is_refused() {
    let wire = Wire::default();
    let sink = EventBridgeSink::new(wire.client(), BUS);
    assert_eq!(sink.publish(&[]).await.unwrap(), vec![]);
    let events: Vec<OutboxEvent> = (0..11).map(event).collect();
    let refs: Vec<&OutboxEvent> = events.iter().collect();
    let error = sink.publish(&refs).await.unwrap_err();
    assert_eq!(error.class, FailureClass::Permanent);
    assert!(wire.requests().is_empty());
}

// --- through the relay ---

#[tokio::test(start_paused = true)]
async fn throttled_entries_are_retried_until_published() {
    let wire = Wire::default().then(|_| {
        let entries = json!([{ "EventId": "a" }, { "ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded" }, { "EventId": "c" }]);
        (200, json!({ "FailedEntryCount": 1, "Entries": entries }).to_string())
    });
    let sink = EventBridgeSink::new(wire.client(), BUS);
    let relay = Relay::new(sink, RecordingQuarantine::default(), RelayConfig::default());
    let events: Vec<OutboxEvent> = (0..3).map(event).collect();

    let outcome = relay.relay(&records(&events), None).await;

    assert_eq!(outcome.published, 3);
    assert_eq!(outcome.retried, 1);
    assert_eq!(outcome.first_failure, None);
    assert!(relay.quarantine().records().is_empty());
    let requests = wire.requests();
    assert_eq!(requests.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 1]);
    assert_entry_of(&requests[1][0], &events[1]);
}

#[tokio::test(start_paused = true)]
async fn a_throttled_call_is_retried_whole() {
    let wire = Wire::default().then(|_| {
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
        )
    });
    let sink = EventBridgeSink::new(wire.client(), BUS);
    let relay = Relay::new(sink, RecordingQuarantine::default(), RelayConfig::default());
    let events: Vec<OutboxEvent> = (0..2).map(event).collect();

    let outcome = relay.relay(&records(&events), None).await;

    assert_eq!((outcome.published, outcome.retried, outcome.failed), (2, 2, 0));
    let requests = wire.requests();
    assert_eq!(requests.len(), 2, "the throttled call, then the same call again");
    assert_eq!(requests[0], requests[1]);
}

#[tokio::test(start_paused = true)]
async fn a_permanently_refused_entry_is_quarantined_with_its_code() {
    let rule = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| output(vec![ok(), failed("MalformedDetail", "Detail is malformed")]));
    let sink = EventBridgeSink::new(eventbridge(RuleMode::Sequential, &[&rule]), BUS);
    let relay = Relay::new(sink, RecordingQuarantine::default(), RelayConfig::default());
    let events: Vec<OutboxEvent> = (0..2).map(event).collect();

    let outcome = relay.relay(&records(&events), None).await;

    assert_eq!(
        (outcome.published, outcome.quarantined, outcome.retried),
        (1, 1, 0)
    );
    assert_eq!(outcome.first_failure, None);
    let quarantined = relay.quarantine().records();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].position, "0002");
    assert!(
        quarantined[0].reason.contains("MalformedDetail"),
        "{}",
        quarantined[0].reason
    );
    assert_eq!(quarantined[0].event.as_ref(), Some(&events[1]));
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_oversize_event_is_quarantined_without_a_call() {
    let wire = Wire::default();
    let sink = EventBridgeSink::new(wire.client(), BUS).with_max_request_bytes(2_000);
    let big = OutboxEvent::builder("com.example.orders", "OrderPlaced")
        .aggregate("Order", "o-big")
        .sequence(1)
        .payload(&json!({ "blob": "x".repeat(2_000) }))
        .build(&FixedClock::new(t0()))
        .unwrap();
    let relay = Relay::new(sink, RecordingQuarantine::default(), RelayConfig::default());

    let outcome = relay.relay(&records(std::slice::from_ref(&big)), None).await;

    assert_eq!(
        (outcome.quarantined, outcome.published, outcome.failed),
        (1, 0, 0)
    );
    assert!(wire.requests().is_empty());
    let quarantined = relay.quarantine().records();
    assert_eq!(quarantined[0].event.as_ref(), Some(&big));
    assert!(
        quarantined[0].reason.contains(&entry_size(&big).to_string()),
        "{}",
        quarantined[0].reason
    );
}

#[tokio::test(start_paused = true)]
async fn twenty_three_events_go_out_in_three_calls_of_ten_ten_and_three() {
    let wire = Wire::default();
    let sink = EventBridgeSink::new(wire.client(), BUS);
    let relay = Relay::new(sink, RecordingQuarantine::default(), RelayConfig::default());
    let events: Vec<OutboxEvent> = (0..23).map(event).collect();

    let outcome = relay.relay(&records(&events), None).await;

    assert_eq!(outcome.published, 23);
    let mut requests = wire.requests();
    // Calls run concurrently: put them back in chunk order by their first event.
    let first_n = |r: &Vec<serde_json::Value>| {
        let detail: serde_json::Value = serde_json::from_str(r[0]["Detail"].as_str().unwrap()).unwrap();
        detail["payload"]["n"].as_u64().unwrap()
    };
    requests.sort_by_key(first_n);
    let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![10, 10, 3]);
    let sent: Vec<String> = requests
        .iter()
        .flat_map(|r| r.iter().map(|e| e["Detail"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<String> = events.iter().map(OutboxEvent::to_json).collect();
    assert_eq!(sent, expected, "order kept, nothing lost");
}

// --- the SQS quarantine ---

fn poison(raw: &str) -> QuarantinedRecord {
    QuarantinedRecord {
        position: "49600000000000000000000000000000000000001".into(),
        reason: "poison record: missing field `source`".into(),
        event: None,
        raw: Some(raw.into()),
    }
}

fn capture_sends(captured: &Captured<SendMessageInput>) -> Rule {
    let captured = captured.clone();
    mock!(aws_sdk_sqs::Client::send_message)
        .match_requests(move |req| {
            captured.lock().unwrap().push(req.clone());
            true
        })
        .then_output(|| SendMessageOutput::builder().message_id("m-1").build())
}

#[tokio::test]
async fn an_event_is_sent_as_a_message_that_reads_back() {
    let captured = Captured::default();
    let rule = capture_sends(&captured);
    let quarantine = SqsQuarantine::new(sqs(&[&rule]), QUEUE)
        .with_origin("dynamodb:orders")
        .with_clock(Arc::new(FixedClock::new(t0())));
    let e = event(7);
    let record = QuarantinedRecord {
        position: "0007".into(),
        reason: "refused by the bus: MalformedDetail: Detail is malformed".into(),
        event: Some(e.clone()),
        raw: None,
    };

    quarantine.quarantine(&record).await.unwrap();

    let sent = captured.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url(), Some(QUEUE));
    let message = QuarantineMessage::from_body(sent[0].message_body().unwrap()).unwrap();
    assert_eq!(
        message,
        QuarantineMessage::new(&record, Some("dynamodb:orders"), t0())
    );
    assert_eq!(message.reason, record.reason);
    assert_eq!(message.position, "0007");
    assert_eq!(message.origin.as_deref(), Some("dynamodb:orders"));
    assert_eq!(message.quarantined_at, t0());
    assert_eq!(message.outbox_event().unwrap().unwrap().id(), e.id());
    assert_eq!(message.outbox_event().unwrap().unwrap(), e);
    assert_eq!(message.raw, None);

    let attributes = sent[0].message_attributes().unwrap();
    let attr = |name: &str| {
        let value = &attributes[name];
        assert_eq!(value.data_type(), "String");
        value.string_value().unwrap().to_owned()
    };
    assert_eq!(attributes.len(), 3);
    assert_eq!(attr(ATTRIBUTE_REASON), record.reason);
    assert_eq!(attr(ATTRIBUTE_EVENT_ID), e.id().to_string());
    assert_eq!(attr(ATTRIBUTE_EVENT_TYPE), "OrderPlaced");
}

#[tokio::test]
async fn a_poison_record_keeps_its_raw_text_and_has_only_the_reason_attribute() {
    let captured = Captured::default();
    let rule = capture_sends(&captured);
    let quarantine = SqsQuarantine::new(sqs(&[&rule]), QUEUE);
    let raw = r#"{"eventName":"INSERT","dynamodb":{"NewImage":{"pk":{"S":"Order#o-1"}}}}"#;

    quarantine.quarantine(&poison(raw)).await.unwrap();

    let sent = captured.lock().unwrap().clone();
    let message = QuarantineMessage::from_body(sent[0].message_body().unwrap()).unwrap();
    assert_eq!(message.raw.as_deref(), Some(raw));
    assert!(message.event.is_none());
    assert_eq!(message.origin, None);
    let attributes = sent[0].message_attributes().unwrap();
    assert_eq!(attributes.keys().collect::<Vec<_>>(), vec![ATTRIBUTE_REASON]);
}

#[tokio::test]
async fn an_sqs_error_is_a_quarantine_error() {
    let rule = mock!(aws_sdk_sqs::Client::send_message).then_error(|| {
        SendMessageError::QueueDoesNotExist(
            QueueDoesNotExist::builder()
                .message("The specified queue does not exist.")
                .meta(
                    aws_sdk_sqs::error::ErrorMetadata::builder()
                        .code("AWS.SimpleQueueService.NonExistentQueue")
                        .message("The specified queue does not exist.")
                        .build(),
                )
                .build(),
        )
    });
    let quarantine = SqsQuarantine::new(sqs(&[&rule]), QUEUE);

    let error = quarantine.quarantine(&poison("{}")).await.unwrap_err();

    assert!(error.message.contains("NonExistentQueue"), "{}", error.message);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn when_the_quarantine_fails_the_refused_record_fails() {
    let refuse = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| output(vec![failed("InvalidArgument", "bad source")]));
    let sqs_down = mock!(aws_sdk_sqs::Client::send_message).then_http_response(|| http_error(500, ""));
    let relay = Relay::new(
        EventBridgeSink::new(eventbridge(RuleMode::Sequential, &[&refuse]), BUS),
        SqsQuarantine::new(sqs(&[&sqs_down]), QUEUE),
        RelayConfig::default(),
    );
    let events = [event(1)];

    let outcome = relay.relay(&records(&events), None).await;

    assert_eq!((outcome.failed, outcome.quarantined), (1, 0));
    assert_eq!(outcome.first_failure.as_deref(), Some("0001"));
    assert_eq!(sqs_down.num_calls(), 1);
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_whole_and_one_at_the_limit_is_sent() {
    let captured = Captured::default();
    let rule = capture_sends(&captured);
    let record = poison(&format!("{{\"blob\":\"{}\"}}", "x".repeat(1_000)));
    let body = QuarantineMessage::new(&record, Some("dynamodb:orders"), t0()).to_body();
    // The body, and the `reason` attribute's name, data type and value.
    let size = body.len() + "reason".len() + "String".len() + record.reason.len();
    let quarantine = |limit: usize| {
        SqsQuarantine::new(sqs(&[&rule]), QUEUE)
            .with_origin("dynamodb:orders")
            .with_clock(Arc::new(FixedClock::new(t0())))
            .with_max_message_bytes(limit)
    };

    let error = quarantine(size - 1).quarantine(&record).await.unwrap_err();
    assert!(error.message.contains(&size.to_string()), "{}", error.message);
    assert!(error.message.contains("not truncated"), "{}", error.message);
    assert!(
        error.message.contains("OUTBOX_CLAIM_CHECK_BUCKET"),
        "the error names the fix: {}",
        error.message
    );
    assert_eq!(rule.num_calls(), 0);

    quarantine(size).quarantine(&record).await.unwrap();
    let sent = captured.lock().unwrap().clone();
    assert_eq!(sent[0].message_body(), Some(body.as_str()));
}
