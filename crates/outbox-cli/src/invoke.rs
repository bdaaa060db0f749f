//! `outbox invoke`: the Lambda handler on an event file, outside Lambda.

use outbox_core::{EventSink, Quarantine};
use outbox_dynamodb_relay::LambdaStreamBatch;
use outbox_lambda::{HandlerError, RelayHandler};

/// Why an invocation could not produce a response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The file is not a DynamoDB Streams event.
    #[error("the event is not a DynamoDB Streams event (line {line}, column {column}): {reason}")]
    NotAnEvent {
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
        /// What serde found.
        reason: String,
    },
    /// The handler failed the whole invocation (as Lambda would see it).
    #[error("the handler failed the invocation")]
    Handler(#[from] HandlerError),
}

/// Parses a Lambda DynamoDB Streams event from JSON text, as the Lambda
/// runtime does for the handler: the outer shape only (`{"Records": [...]}`);
/// each record is read by the decoder.
pub fn parse_event(json: &str) -> Result<LambdaStreamBatch, InvokeError> {
    LambdaStreamBatch::from_json(json).map_err(|e| InvokeError::NotAnEvent {
        line: e.line(),
        column: e.column(),
        reason: if e.is_data() {
            format!(
                "a DynamoDB Streams event is a JSON object with a `Records` array of stream records ({e})"
            )
        } else {
            e.to_string()
        },
    })
}

/// Runs `handler` on the event in `json` and returns the handler's response
/// as JSON text: the same bytes Lambda would get.
pub async fn invoke<S: EventSink, Q: Quarantine>(
    handler: &RelayHandler<S, Q>,
    json: &str,
) -> Result<String, InvokeError> {
    let event = parse_event(json)?;
    let (response, _) = handler.handle_batch(event, None, "outbox-invoke").await?;
    // A response of strings and lists always serialises.
    Ok(serde_json::to_string(&response).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_named_with_its_place() {
        for (text, needle) in [
            ("", "line 1"),
            ("{\"Records\": 5}", "Records"),
            ("[1,2]", "line 1"),
            ("{\"Records\":[1,]}", "line 1"),
        ] {
            let err = parse_event(text).unwrap_err();
            assert!(
                err.to_string().contains(needle) || err.to_string().contains("invalid"),
                "{text}: {err}"
            );
            assert!(matches!(err, InvokeError::NotAnEvent { .. }));
        }
        assert!(parse_event("{\"Records\":[]}").unwrap().is_empty());
        // What is inside a record is the decoder's to judge, record by record.
        let odd =
            "{\"Records\":[{\"eventName\":\"INSERT\",\"dynamodb\":{\"NewImage\":{\"a\":{\"Q\":\"x\"}}}}]}";
        assert_eq!(parse_event(odd).unwrap().len(), 1);
    }
}
