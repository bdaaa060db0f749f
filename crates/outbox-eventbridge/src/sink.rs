//! [`EventBridgeSink`]: the relay's [`EventSink`] over Amazon EventBridge
//! `PutEvents`.

use std::error::Error as StdError;

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::http::HttpResponse;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_smithy_types::retry::ProvideErrorKind;
use outbox_core::{ChunkLimits, EntryResult, EventSink, FailureClass, OutboxEvent, SinkError};

use crate::entry::{
    DEFAULT_MAX_REQUEST_BYTES, MAX_PUT_EVENTS_ENTRIES, classify_entry_error, entry_size_as,
    to_put_events_entry_as,
};
use crate::{BusFormat, S3ClaimCheck};

/// Publishes outbox events to one EventBridge event bus with `PutEvents`,
/// through the AWS SDK's client.
///
/// Each [`publish`](EventSink::publish) sends one `PutEvents` request (at most
/// [`MAX_PUT_EVENTS_ENTRIES`] entries, at most
/// [`with_max_request_bytes`](Self::with_max_request_bytes) bytes, default
/// [`DEFAULT_MAX_REQUEST_BYTES`]) and reads every per-entry result, since an
/// HTTP 200 can still carry `FailedEntryCount > 0`:
///
/// - an entry without an error code is [`EntryResult::Published`];
/// - `ThrottlingException` and `InternalFailure` (the codes the
///   `PutEventsResultEntry` reference calls retryable) are transient: the
///   relay retries the entry;
/// - `InvalidArgument`, `MalformedDetail`, the authorisation codes, or a code
///   or message saying the entry is too large, are permanent: the relay
///   quarantines the event;
/// - a code this build does not know is transient: the relay retries it
///   within its time budget, then the record fails and the host's failure
///   path keeps it. Guessing permanent instead would quarantine events that
///   a later try might deliver;
/// - a result entry missing from the response is transient too.
///
/// A failure of the whole call is a [`SinkError`], classified from the
/// SDK's error metadata after the SDK's own retries: timeouts, connection
/// and response errors, the SDK's throttling and transient error codes,
/// errors the SDK models as retryable, HTTP 429 and 5xx are transient;
/// anything else (access denied, missing bus, validation) is permanent,
/// which fails the records without quarantining them (the events are fine,
/// the setup is not). The client's configuration (endpoint, credentials,
/// retries, timeouts, HTTP client) applies to every call.
///
/// With [`with_large_events`](Self::with_large_events), an event too large
/// for a request is published by claim-check instead of being quarantined.
/// With [`with_bus_format`](Self::with_bus_format), the `Detail` is a
/// CloudEvents event instead of the envelope; sizes are always those of
/// the `Detail` actually sent.
#[derive(Debug, Clone)]
pub struct EventBridgeSink {
    client: Client,
    bus: String,
    max_request_bytes: usize,
    large: Option<S3ClaimCheck>,
    format: BusFormat,
}

impl EventBridgeSink {
    /// A sink publishing to the event bus `bus` (name or ARN) with `client`.
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            large: None,
            format: BusFormat::Envelope,
        }
    }

    /// Writes each entry's `Detail` in `format` instead of the envelope
    /// ([`BusFormat::Envelope`], the default), for consumers that expect
    /// CloudEvents ([`BusFormat::CloudEvents`]).
    #[must_use]
    pub fn with_bus_format(mut self, format: BusFormat) -> Self {
        self.format = format;
        self
    }

    /// Publishes an event too large for a request by claim-check: the whole
    /// event (its envelope JSON) is stored in `store` as
    /// `<prefix>events/<event id>.json`, and the entry published is the same
    /// envelope whose payload is the object's [`ClaimCheck`](outbox_core::ClaimCheck)
    /// (see [`OutboxEvent::claimed`]), in the sink's
    /// [bus format](Self::with_bus_format) (in CloudEvents, the claim-check
    /// mark is an extension attribute). The stored object is the envelope in
    /// either format. Consumers read it back with
    /// [`OutboxEvent::claim_check`] and the object. Storing is idempotent: a
    /// retry writes the same object.
    #[must_use]
    pub fn with_large_events(mut self, store: S3ClaimCheck) -> Self {
        self.large = Some(store);
        self
    }

    /// Uses `bytes` as the request size limit instead of
    /// [`DEFAULT_MAX_REQUEST_BYTES`] (for instance 1 MiB where the bus takes
    /// it). An event larger than this on its own is quarantined.
    #[must_use]
    pub fn with_max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// The event bus name or ARN.
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// The request size limit in bytes.
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// The form of each entry's `Detail`.
    pub fn bus_format(&self) -> BusFormat {
        self.format
    }
}

impl EventSink for EventBridgeSink {
    fn limits(&self) -> ChunkLimits {
        ChunkLimits {
            max_entries: MAX_PUT_EVENTS_ENTRIES,
            max_bytes: self.max_request_bytes,
        }
    }

    fn entry_size(&self, event: &OutboxEvent) -> usize {
        let size = entry_size_as(event, self.format);
        match &self.large {
            // Its claim-check entry, with the largest size it can carry.
            Some(store) if size > self.max_request_bytes => event
                .claimed(&outbox_core::ClaimCheck::new(
                    store.bucket(),
                    store.key_for(&large_event_name(event)),
                    usize::MAX,
                ))
                .map_or(size, |claimed| entry_size_as(&claimed, self.format)),
            _ => size,
        }
    }

    async fn publish(&self, events: &[&OutboxEvent]) -> Result<Vec<EntryResult>, SinkError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(store) = &self.large
            && events
                .iter()
                .any(|e| entry_size_as(e, self.format) > self.max_request_bytes)
        {
            // Boxed: the S3 calls make the future deep, and this path is rare.
            return Box::pin(self.publish_claiming(store, events)).await;
        }
        self.publish_entries(events).await
    }
}

impl EventBridgeSink {
    /// One `PutEvents` call for `events`, as they are.
    async fn publish_entries(&self, events: &[&OutboxEvent]) -> Result<Vec<EntryResult>, SinkError> {
        if events.len() > MAX_PUT_EVENTS_ENTRIES {
            return Err(SinkError {
                class: FailureClass::Permanent,
                code: "TooManyEntries".into(),
                message: format!(
                    "{} entries in one call; PutEvents takes at most {MAX_PUT_EVENTS_ENTRIES}",
                    events.len()
                ),
            });
        }
        let entries = events
            .iter()
            .map(|event| to_put_events_entry_as(event, &self.bus, self.format))
            .collect();
        let output = match self.client.put_events().set_entries(Some(entries)).send().await {
            Ok(output) => output,
            Err(err) => {
                let error = classify_call_error(err);
                tracing::warn!(
                    bus = %self.bus,
                    entries = events.len(),
                    code = %error.code,
                    class = ?error.class,
                    error = %error.message,
                    "PutEvents call failed"
                );
                return Err(error);
            }
        };
        let results = read_results(events, output.entries());
        let failed = results
            .iter()
            .filter(|r| matches!(r, EntryResult::Failed { .. }))
            .count();
        if usize::try_from(output.failed_entry_count()).ok() != Some(failed) {
            tracing::warn!(
                bus = %self.bus,
                reported = output.failed_entry_count(),
                counted = failed,
                "FailedEntryCount disagrees with the result entries"
            );
        }
        tracing::debug!(bus = %self.bus, entries = events.len(), failed, "PutEvents sent");
        Ok(results)
    }
}

/// The object name of a large event stored by claim-check.
fn large_event_name(event: &OutboxEvent) -> String {
    format!("events/{}.json", event.id())
}

impl EventBridgeSink {
    /// Publishes `events`, storing those too large for a request in `store`
    /// and sending their claim-check entries. An event that cannot be
    /// stored fails transiently; the others are published.
    async fn publish_claiming(
        &self,
        store: &S3ClaimCheck,
        events: &[&OutboxEvent],
    ) -> Result<Vec<EntryResult>, SinkError> {
        let mut results: Vec<Option<EntryResult>> = vec![None; events.len()];
        let mut claimed: Vec<Option<OutboxEvent>> = vec![None; events.len()];
        for (i, event) in events.iter().enumerate() {
            if entry_size_as(event, self.format) <= self.max_request_bytes {
                continue;
            }
            let stored = store
                .store_as(&large_event_name(event), event.to_json())
                .await
                .map_err(|e| outbox_core::error_chain(&e))
                .and_then(|check| event.claimed(&check).map_err(|e| e.to_string()));
            match stored {
                Ok(reference) => {
                    tracing::info!(event_id = %event.id(), "large event stored by claim-check");
                    claimed[i] = Some(reference);
                }
                Err(message) => {
                    tracing::warn!(event_id = %event.id(), error = %message, "storing a large event failed");
                    results[i] = Some(EntryResult::Failed {
                        class: FailureClass::Transient,
                        code: "ClaimCheckFailed".into(),
                        message,
                    });
                }
            }
        }
        let sent: Vec<usize> = (0..events.len()).filter(|&i| results[i].is_none()).collect();
        let to_send: Vec<&OutboxEvent> = sent
            .iter()
            .map(|&i| claimed[i].as_ref().unwrap_or(events[i]))
            .collect();
        if !to_send.is_empty() {
            let answers = self.publish_entries(&to_send).await?;
            for (&i, answer) in sent.iter().zip(answers) {
                results[i] = Some(answer);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or(EntryResult::Failed {
                    class: FailureClass::Transient,
                    code: "MissingResultEntry".into(),
                    message: "no result for the entry".into(),
                })
            })
            .collect())
    }
}

/// Turns the response's result entries (positionally aligned with the
/// request entries) into one [`EntryResult`] per event.
fn read_results(events: &[&OutboxEvent], results: &[PutEventsResultEntry]) -> Vec<EntryResult> {
    if results.len() > events.len() {
        tracing::warn!(
            requested = events.len(),
            returned = results.len(),
            "PutEvents returned extra result entries"
        );
    }
    events
        .iter()
        .enumerate()
        .map(|(i, event)| match results.get(i) {
            None => {
                tracing::warn!(event_id = %event.id(), index = i, "PutEvents returned no result for the entry");
                EntryResult::Failed {
                    class: FailureClass::Transient,
                    code: "MissingResultEntry".into(),
                    message: format!(
                        "PutEvents returned {} result entries for {} request entries",
                        results.len(),
                        events.len()
                    ),
                }
            }
            Some(result) => match result.error_code() {
                None => EntryResult::Published,
                Some(code) => {
                    let message = result.error_message().unwrap_or_default();
                    let class = classify_entry_error(code, message);
                    tracing::debug!(
                        event_id = %event.id(),
                        index = i,
                        code,
                        message,
                        class = ?class,
                        "PutEvents entry failed"
                    );
                    EntryResult::Failed {
                        class,
                        code: code.to_owned(),
                        message: message.to_owned(),
                    }
                }
            },
        })
        .collect()
}

/// Turns a failed `PutEvents` call into a [`SinkError`] with its retry class.
///
/// Timeouts, dispatch (connection) failures and unreadable responses are
/// transient. A service error is transient when the SDK's retry classifiers
/// would call it so: a throttling or transient error code, an error modeled
/// as retryable, or HTTP 429 or 5xx; it is permanent otherwise (access
/// denied, missing bus, validation, ...). A request that could not be built
/// is permanent.
fn classify_call_error<E>(err: SdkError<E, HttpResponse>) -> SinkError
where
    E: ProvideErrorMetadata + ProvideErrorKind + StdError + Send + Sync + 'static,
{
    let chain = DisplayErrorContext(&err).to_string();
    let (class, code) = match &err {
        SdkError::TimeoutError(_) => (FailureClass::Transient, "Timeout".to_owned()),
        SdkError::DispatchFailure(failure) => {
            let code = if failure.is_timeout() {
                "Timeout"
            } else {
                "DispatchFailure"
            };
            (FailureClass::Transient, code.to_owned())
        }
        SdkError::ResponseError(_) => (FailureClass::Transient, "ResponseError".to_owned()),
        SdkError::ServiceError(service) => {
            let status = u16::from(service.raw().status());
            let code = ProvideErrorMetadata::code(service.err());
            let transient = code
                .is_some_and(|c| THROTTLING_ERRORS.contains(&c) || TRANSIENT_ERRORS.contains(&c))
                || service.err().retryable_error_kind().is_some()
                || status == 429
                || status >= 500;
            let class = if transient {
                FailureClass::Transient
            } else {
                FailureClass::Permanent
            };
            (class, code.map_or_else(|| format!("HTTP{status}"), str::to_owned))
        }
        SdkError::ConstructionFailure(_) => (FailureClass::Permanent, "ConstructionFailure".to_owned()),
        _ => (FailureClass::Transient, "Unknown".to_owned()),
    };
    let message = err
        .as_service_error()
        .and_then(ProvideErrorMetadata::message)
        .map_or(chain, str::to_owned);
    SinkError { class, code, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_eventbridge::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_eventbridge::operation::put_events::PutEventsError;
    use aws_sdk_eventbridge::types::error::InternalException;
    use aws_smithy_types::body::SdkBody;
    use chrono::{TimeZone, Utc};
    use outbox_core::FixedClock;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::empty())
    }

    fn service(code: Option<&str>, status: u16) -> SdkError<PutEventsError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("from the service");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        SdkError::service_error(PutEventsError::generic(meta.build()), response(status))
    }

    fn io_error(text: &str) -> Box<dyn StdError + Send + Sync> {
        Box::new(std::io::Error::other(text.to_owned()))
    }

    #[test]
    fn throttling_and_internal_failures_are_transient() {
        for (code, status) in [
            ("ThrottlingException", 400),
            ("InternalException", 500),
            ("InternalFailure", 500),
            ("ServiceUnavailable", 503),
        ] {
            let error = classify_call_error(service(Some(code), status));
            assert_eq!(error.class, FailureClass::Transient, "{code}");
            assert_eq!(error.code, code);
            assert_eq!(error.message, "from the service");
        }
        let modeled = SdkError::service_error(
            PutEventsError::InternalException(
                InternalException::builder()
                    .message("boom")
                    .meta(
                        ErrorMetadata::builder()
                            .code("InternalException")
                            .message("boom")
                            .build(),
                    )
                    .build(),
            ),
            response(500),
        );
        let error = classify_call_error(modeled);
        assert_eq!(error.class, FailureClass::Transient);
        assert_eq!(
            (error.code.as_str(), error.message.as_str()),
            ("InternalException", "boom")
        );
    }

    #[test]
    fn unknown_codes_follow_the_http_status() {
        assert_eq!(
            classify_call_error(service(Some("Whatever"), 502)).class,
            FailureClass::Transient
        );
        assert_eq!(
            classify_call_error(service(Some("SlowDown"), 429)).class,
            FailureClass::Transient
        );
        let no_code = classify_call_error(service(None, 503));
        assert_eq!(
            (no_code.class, no_code.code.as_str()),
            (FailureClass::Transient, "HTTP503")
        );
        let no_code = classify_call_error(service(None, 403));
        assert_eq!(
            (no_code.class, no_code.code.as_str()),
            (FailureClass::Permanent, "HTTP403")
        );
    }

    #[test]
    fn configuration_errors_are_permanent() {
        for code in [
            "AccessDeniedException",
            "ResourceNotFoundException",
            "ValidationException",
        ] {
            let error = classify_call_error(service(Some(code), 400));
            assert_eq!(error.class, FailureClass::Permanent, "{code}");
            assert_eq!(error.code, code);
        }
        let error = classify_call_error(SdkError::<PutEventsError, HttpResponse>::construction_failure(
            io_error("no region"),
        ));
        assert_eq!(error.class, FailureClass::Permanent);
    }

    #[test]
    fn timeouts_and_connection_failures_are_transient_and_keep_the_chain() {
        let timeout = classify_call_error(SdkError::<PutEventsError, HttpResponse>::timeout_error(io_error(
            "operation timed out",
        )));
        assert_eq!(
            (timeout.class, timeout.code.as_str()),
            (FailureClass::Transient, "Timeout")
        );
        assert!(
            timeout.message.contains("operation timed out"),
            "{}",
            timeout.message
        );

        let connect_timeout =
            classify_call_error(SdkError::<PutEventsError, HttpResponse>::dispatch_failure(
                ConnectorError::timeout(io_error("connect timed out")),
            ));
        assert_eq!(
            (connect_timeout.class, connect_timeout.code.as_str()),
            (FailureClass::Transient, "Timeout")
        );

        let refused = classify_call_error(SdkError::<PutEventsError, HttpResponse>::dispatch_failure(
            ConnectorError::io(io_error("connection refused")),
        ));
        assert_eq!(
            (refused.class, refused.code.as_str()),
            (FailureClass::Transient, "DispatchFailure")
        );
        assert!(
            refused.message.contains("connection refused"),
            "{}",
            refused.message
        );

        let garbled = classify_call_error(SdkError::<PutEventsError, HttpResponse>::response_error(
            io_error("unexpected EOF"),
            response(200),
        ));
        assert_eq!(
            (garbled.class, garbled.code.as_str()),
            (FailureClass::Transient, "ResponseError")
        );
    }

    fn events(n: usize) -> Vec<OutboxEvent> {
        let clock = FixedClock::new(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
        (0..n)
            .map(|i| {
                OutboxEvent::builder("s", "T")
                    .aggregate("A", format!("a-{i}"))
                    .sequence(1)
                    .payload(&serde_json::json!({}))
                    .build(&clock)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn entries_are_sized_in_the_sink_bus_format() {
        let client = Client::from_conf(
            aws_sdk_eventbridge::Config::builder()
                .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
                .build(),
        );
        let event = &events(1)[0];
        let envelope = EventBridgeSink::new(client.clone(), "b");
        assert_eq!(envelope.bus_format(), BusFormat::Envelope);
        assert_eq!(envelope.entry_size(event), crate::entry_size(event));
        let cloudevents = envelope.with_bus_format(BusFormat::CloudEvents);
        assert_eq!(cloudevents.bus_format(), BusFormat::CloudEvents);
        assert_eq!(
            cloudevents.entry_size(event),
            crate::request_entry_size(&to_put_events_entry_as(event, "b", BusFormat::CloudEvents))
        );
        assert_ne!(cloudevents.entry_size(event), crate::entry_size(event));
    }

    #[test]
    fn results_are_read_positionally_and_missing_ones_are_transient() {
        let events = events(3);
        let refs: Vec<&OutboxEvent> = events.iter().collect();
        let results = [
            PutEventsResultEntry::builder().event_id("e-1").build(),
            PutEventsResultEntry::builder()
                .error_code("MalformedDetail")
                .error_message("bad json")
                .build(),
        ];
        let read = read_results(&refs, &results);
        assert_eq!(read.len(), 3);
        assert_eq!(read[0], EntryResult::Published);
        assert_eq!(
            read[1],
            EntryResult::Failed {
                class: FailureClass::Permanent,
                code: "MalformedDetail".into(),
                message: "bad json".into(),
            }
        );
        assert!(matches!(
            &read[2],
            EntryResult::Failed { class: FailureClass::Transient, code, .. } if code == "MissingResultEntry"
        ));
    }
}
