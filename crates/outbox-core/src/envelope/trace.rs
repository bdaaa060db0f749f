//! The trace context of an event: the W3C `traceparent` value, its X-Ray
//! form, and where [`OutboxEventBuilder::build`](crate::OutboxEventBuilder::build)
//! finds one when none is given.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::EnvelopeError;

/// The variable in which AWS Lambda puts each invocation's X-Ray trace
/// header (`Root=...;Parent=...;Sampled=...`).
pub(crate) const ENV_XRAY_TRACE_ID: &str = "_X_AMZN_TRACE_ID";

/// The trace context an event built now belongs to, when the caller gave
/// none: the current OpenTelemetry span's (feature `opentelemetry`), else
/// the Lambda invocation's, read through `env` (a variable name to its
/// value). `None` outside both.
pub(crate) fn captured(env: &dyn Fn(&str) -> Option<String>) -> Option<TraceParent> {
    opentelemetry_trace_parent().or_else(|| lambda_trace_parent(env))
}

/// The Lambda invocation's trace context, from [`ENV_XRAY_TRACE_ID`].
fn lambda_trace_parent(env: &dyn Fn(&str) -> Option<String>) -> Option<TraceParent> {
    env(ENV_XRAY_TRACE_ID).and_then(|header| TraceParent::from_xray_header(&header))
}

/// The context of the current `tracing` span as `tracing-opentelemetry`
/// tracks it, else OpenTelemetry's current context; only a valid span
/// context (non-zero trace and span ids) counts.
#[cfg(feature = "opentelemetry")]
fn opentelemetry_trace_parent() -> Option<TraceParent> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let of = |context: opentelemetry::Context| {
        let span = context.span();
        let span = span.span_context();
        if !span.is_valid() {
            return None;
        }
        let value = format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8()
        );
        TraceParent::parse(&value).ok()
    };
    of(tracing::Span::current().context()).or_else(|| of(opentelemetry::Context::current()))
}

/// Without the `opentelemetry` feature there is no span context to read.
#[cfg(not(feature = "opentelemetry"))]
fn opentelemetry_trace_parent() -> Option<TraceParent> {
    None
}

/// A W3C Trace Context `traceparent` value (version `00`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceParent(String);

impl TraceParent {
    /// Parses `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`,
    /// lowercase, with non-zero trace and parent ids.
    pub fn parse(value: &str) -> Result<Self, EnvelopeError> {
        let invalid = || EnvelopeError::InvalidTraceParent {
            value: value.to_owned(),
        };
        let parts: Vec<&str> = value.split('-').collect();
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return Err(invalid());
        };
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let all_zero = |s: &str| s.bytes().all(|b| b == b'0');
        if *version != "00"
            || !lower_hex(trace_id, 32)
            || !lower_hex(parent_id, 16)
            || !lower_hex(flags, 2)
            || all_zero(trace_id)
            || all_zero(parent_id)
        {
            return Err(invalid());
        }
        Ok(Self(value.to_owned()))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The 16-hex-digit parent (span) id.
    pub fn parent_id(&self) -> &str {
        &self.0[36..52]
    }

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.0[53..55], 16).is_ok_and(|f| f & 1 == 1)
    }

    /// The same context as an AWS X-Ray trace header
    /// (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`), the form
    /// EventBridge's `TraceHeader` takes.
    pub fn to_xray_header(&self) -> String {
        let trace = self.trace_id();
        format!(
            "Root=1-{}-{};Parent={};Sampled={}",
            &trace[..8],
            &trace[8..],
            self.parent_id(),
            u8::from(self.sampled())
        )
    }

    /// The W3C form of an AWS X-Ray trace header
    /// (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`, the
    /// inverse of [`to_xray_header`](Self::to_xray_header)), as AWS Lambda
    /// hands it to each invocation in `_X_AMZN_TRACE_ID`. Fields may come in
    /// any order and others (`Lineage`, ...) are ignored; `Sampled` other
    /// than `1` (`0`, `?`, absent) is not sampled. `None` when there is no
    /// well-formed `Root` or `Parent`: without a parent id there is no W3C
    /// context to continue.
    pub fn from_xray_header(header: &str) -> Option<TraceParent> {
        let mut root = None;
        let mut parent = None;
        let mut sampled = false;
        for field in header.split(';') {
            match field.trim().split_once('=') {
                Some(("Root", value)) => root = Some(value),
                Some(("Parent", value)) => parent = Some(value),
                Some(("Sampled", value)) => sampled = value == "1",
                _ => {}
            }
        }
        let (version, rest) = root?.split_once('-')?;
        let (time, unique) = rest.split_once('-')?;
        if version != "1" || time.len() != 8 || unique.len() != 24 {
            return None;
        }
        let value = format!(
            "00-{time}{unique}-{}-{}",
            parent?,
            if sampled { "01" } else { "00" }
        );
        TraceParent::parse(&value.to_ascii_lowercase()).ok()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TraceParent {
    type Error = EnvelopeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TraceParent> for String {
    fn from(value: TraceParent) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixedClock, OutboxEvent, OutboxEventBuilder};
    use chrono::{TimeZone, Utc};

    const LAMBDA_HEADER: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    const LAMBDA_TRACE: &str = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";
    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn an_xray_header_becomes_its_w3c_traceparent() {
        let parsed = TraceParent::from_xray_header(LAMBDA_HEADER).unwrap();
        assert_eq!(parsed.as_str(), LAMBDA_TRACE);
        assert_eq!(parsed.to_xray_header(), LAMBDA_HEADER);
        for (header, expected) in [
            (
                "Parent=53995c3f42cd8ad8;Sampled=0;Root=1-5759e988-bd862e3fe1be46a994272793",
                "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00",
            ),
            (
                "Root=1-5759E988-BD862E3FE1BE46A994272793;Parent=53995C3F42CD8AD8;Sampled=?;Lineage=a87bd80c:0",
                "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00",
            ),
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793; Parent=53995c3f42cd8ad8",
                "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00",
            ),
        ] {
            assert_eq!(
                TraceParent::from_xray_header(header).map(String::from).as_deref(),
                Some(expected),
                "{header}"
            );
        }
    }

    #[test]
    fn an_xray_header_without_a_root_and_a_parent_is_no_context() {
        for header in [
            "",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e98-8bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a99427279z;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8a",
            "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
            "Root=1-5759e988-bd862e3fe1be46a994272793-x;Parent=53995c3f42cd8ad8",
        ] {
            assert_eq!(TraceParent::from_xray_header(header), None, "{header}");
        }
    }

    fn builder() -> OutboxEventBuilder {
        OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-1")
            .sequence(1)
            .payload(&serde_json::json!({}))
    }

    fn clock() -> FixedClock {
        FixedClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())
    }

    /// The trace context of `builder`'s event, built in an environment where
    /// `_X_AMZN_TRACE_ID` is `lambda`.
    fn built_in(builder: OutboxEventBuilder, lambda: Option<&str>) -> Option<String> {
        let env = |name: &str| {
            (name == ENV_XRAY_TRACE_ID)
                .then(|| lambda.map(str::to_owned))
                .flatten()
        };
        let event = builder.build_in(&clock(), &env).unwrap();
        event.trace_parent().map(|t| t.as_str().to_owned())
    }

    #[test]
    fn in_lambda_the_invocation_trace_is_captured_unless_one_is_given_or_capture_is_off() {
        assert_eq!(
            built_in(builder(), Some(LAMBDA_HEADER)).as_deref(),
            Some(LAMBDA_TRACE)
        );
        assert_eq!(
            built_in(builder().trace_parent(GIVEN), Some(LAMBDA_HEADER)).as_deref(),
            Some(GIVEN)
        );
        assert_eq!(built_in(builder().no_trace_capture(), Some(LAMBDA_HEADER)), None);
        assert_eq!(
            built_in(
                builder().no_trace_capture().trace_parent(GIVEN),
                Some(LAMBDA_HEADER)
            )
            .as_deref(),
            Some(GIVEN)
        );
        assert_eq!(built_in(builder(), Some("Root=garbage")), None);
        assert_eq!(built_in(builder(), None), None);
    }

    #[test]
    fn a_malformed_given_traceparent_is_an_error_even_where_one_could_be_captured() {
        let env = |_: &str| Some(LAMBDA_HEADER.to_owned());
        let err = builder()
            .trace_parent("00-xyz")
            .build_in(&clock(), &env)
            .unwrap_err();
        assert!(matches!(err, EnvelopeError::InvalidTraceParent { .. }), "{err}");
    }

    #[cfg(feature = "opentelemetry")]
    mod opentelemetry_span {
        use super::*;
        use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        use tracing_subscriber::layer::SubscriberExt;

        /// Runs `f` with a subscriber that gives `tracing` spans an
        /// OpenTelemetry context (this thread only).
        fn with_opentelemetry<T>(f: impl FnOnce() -> T) -> T {
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("outbox-core-test"));
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, f)
        }

        /// The W3C form of the current span's OpenTelemetry context.
        fn current_span_traceparent() -> String {
            let context = tracing::Span::current().context();
            let span = context.span();
            let span = span.span_context();
            assert!(span.is_valid() && span.is_sampled());
            format!("00-{}-{}-01", span.trace_id(), span.span_id())
        }

        #[test]
        fn the_span_context_is_captured_before_the_lambda_one_and_after_a_given_one() {
            with_opentelemetry(|| {
                let span = tracing::info_span!("place order");
                let _entered = span.enter();
                let expected = current_span_traceparent();
                assert_eq!(built_in(builder(), Some(LAMBDA_HEADER)), Some(expected.clone()));
                assert_eq!(built_in(builder(), None), Some(expected.clone()));
                // `build` itself, with the process environment.
                let event = builder().build(&clock()).unwrap();
                assert_eq!(
                    event.trace_parent().map(TraceParent::as_str),
                    Some(expected.as_str())
                );
                assert_eq!(
                    built_in(builder().trace_parent(GIVEN), Some(LAMBDA_HEADER)).as_deref(),
                    Some(GIVEN)
                );
                assert_eq!(built_in(builder().no_trace_capture(), Some(LAMBDA_HEADER)), None);
            });
        }

        #[test]
        fn outside_any_span_the_lambda_context_is_used() {
            with_opentelemetry(|| {
                assert_eq!(
                    built_in(builder(), Some(LAMBDA_HEADER)).as_deref(),
                    Some(LAMBDA_TRACE)
                );
                assert_eq!(built_in(builder(), None), None);
            });
        }

        #[test]
        fn a_span_without_an_opentelemetry_layer_has_no_context() {
            let span = tracing::info_span!("no layer");
            let _entered = span.enter();
            assert_eq!(
                built_in(builder(), Some(LAMBDA_HEADER)).as_deref(),
                Some(LAMBDA_TRACE)
            );
        }
    }
}
