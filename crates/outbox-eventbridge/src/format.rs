//! [`BusFormat`]: what an EventBridge entry's `Detail` holds.

use std::fmt;
use std::str::FromStr;

use outbox_core::OutboxEvent;

/// The form of the outbox event in an EventBridge entry's `Detail`.
///
/// Whichever it is, `Source`, `DetailType`, `Time` and `TraceHeader` are
/// the same, so rules match the same way. Consumers built on
/// `outbox-consumer` read both; other consumers pick the one they speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BusFormat {
    /// The outbox envelope ([`OutboxEvent::to_json`]): `id`,
    /// `aggregate_type`, `sequence`, `payload`, ... The default.
    #[default]
    Envelope,
    /// A CloudEvents 1.0 structured-mode JSON event
    /// ([`OutboxEvent::to_cloudevent_json`]): `specversion`, `type`,
    /// `subject`, `data`, the sequence, trace context and metadata as
    /// extension attributes. For consumers that already speak CloudEvents.
    CloudEvents,
}

impl BusFormat {
    /// Every format, in the order they are documented.
    pub const ALL: [BusFormat; 2] = [BusFormat::Envelope, BusFormat::CloudEvents];

    /// The format's name in configuration: `envelope` or `cloudevents`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Envelope => "envelope",
            Self::CloudEvents => "cloudevents",
        }
    }

    /// The `Detail` text of `event` in this format.
    pub fn detail(self, event: &OutboxEvent) -> String {
        match self {
            Self::Envelope => event.to_json(),
            Self::CloudEvents => event.to_cloudevent_json(),
        }
    }

    /// The length in bytes of [`detail`](Self::detail)'s text, counted
    /// without writing it.
    pub fn detail_len(self, event: &OutboxEvent) -> usize {
        match self {
            Self::Envelope => event.json_len(),
            Self::CloudEvents => event.cloudevent_json_len(),
        }
    }
}

impl fmt::Display for BusFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bus format name that is neither `envelope` nor `cloudevents`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bus format {value:?}: it must be `envelope` or `cloudevents`")]
pub struct UnknownBusFormat {
    value: String,
}

impl UnknownBusFormat {
    /// The name that was given.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for BusFormat {
    type Err = UnknownBusFormat;

    /// Reads `envelope` or `cloudevents` (exactly, as configuration spells them).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|format| format.as_str() == text)
            .ok_or_else(|| UnknownBusFormat {
                value: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_others_are_refused() {
        for format in BusFormat::ALL {
            assert_eq!(format.as_str().parse::<BusFormat>(), Ok(format));
            assert_eq!(format.to_string(), format.as_str());
        }
        assert_eq!(BusFormat::default(), BusFormat::Envelope);
        for bad in ["", "CloudEvents", "cloud-events", "json"] {
            let err = bad.parse::<BusFormat>().unwrap_err();
            assert_eq!(err.value(), bad);
            assert!(err.to_string().contains("`envelope` or `cloudevents`"), "{err}");
        }
    }
}
