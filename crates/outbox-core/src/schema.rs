//! JSON Schemas of typed events, in the form Amazon EventBridge's schema
//! registry takes (`OpenApi3`), so consumers can generate bindings.
//!
//! Each document describes the whole event a rule delivers: the EventBridge
//! fields, the envelope in `detail`, and the event type's payload, with the
//! `x-amazon-events-source` and `x-amazon-events-detail-type` extensions the
//! registry's discovered schemas carry.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::Events;

/// The registry document of one event type.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySchema {
    /// The event type name.
    pub event_type: &'static str,
    /// The registry's schema name: `<source>@<event type>`, as discovered
    /// schemas are named.
    pub name: String,
    /// The OpenAPI 3.0 document (registry schema type `OpenApi3`).
    pub content: Value,
}

/// The registry documents of every type in `E`, published from `source`.
pub fn registry_schemas<E: Events>(source: &str) -> Vec<RegistrySchema> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let payloads = E::payload_schemas(&mut generator);
    let definitions = generator.take_definitions(true);
    payloads
        .into_iter()
        .map(|(event_type, payload)| {
            let mut schemas = definitions.clone();
            schemas.insert("AWSEvent".into(), aws_event(source, event_type));
            schemas.insert("OutboxEnvelope".into(), envelope(payload.to_value()));
            RegistrySchema {
                event_type,
                name: format!("{source}@{event_type}"),
                content: json!({
                    "openapi": "3.0.0",
                    "info": { "version": "1.0.0", "title": event_type },
                    "paths": {},
                    "components": { "schemas": Value::Object(schemas) },
                }),
            }
        })
        .collect()
}

/// The event as a rule delivers it.
fn aws_event(source: &str, event_type: &str) -> Value {
    json!({
        "type": "object",
        "required": ["detail-type", "resources", "detail", "id", "source", "time", "region", "version", "account"],
        "x-amazon-events-detail-type": event_type,
        "x-amazon-events-source": source,
        "properties": {
            "detail": { "$ref": "#/components/schemas/OutboxEnvelope" },
            "account": { "type": "string" },
            "detail-type": { "type": "string" },
            "id": { "type": "string" },
            "region": { "type": "string" },
            "resources": { "type": "array", "items": { "type": "string" } },
            "source": { "type": "string" },
            "time": { "type": "string", "format": "date-time" },
            "version": { "type": "string" },
        },
    })
}

/// The envelope in `detail`, with `payload` as the event type's schema.
fn envelope(payload: Value) -> Value {
    let mut properties = Map::new();
    for (name, schema) in [
        ("id", json!({ "type": "string", "format": "uuid" })),
        ("source", json!({ "type": "string" })),
        ("event_type", json!({ "type": "string" })),
        ("aggregate_type", json!({ "type": "string" })),
        ("aggregate_id", json!({ "type": "string" })),
        (
            "sequence",
            json!({ "type": "integer", "format": "int64", "minimum": 0 }),
        ),
        ("occurred_at", json!({ "type": "string", "format": "date-time" })),
        ("payload", payload),
        ("trace_parent", json!({ "type": "string" })),
        (
            "metadata",
            json!({ "type": "object", "additionalProperties": { "type": "string" } }),
        ),
    ] {
        properties.insert(name.into(), schema);
    }
    json!({
        "type": "object",
        "required": ["id", "source", "event_type", "aggregate_type", "aggregate_id", "sequence", "occurred_at", "payload"],
        "properties": Value::Object(properties),
    })
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::{Event, OutboxEvent, SystemClock};

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Money {
        cents: u64,
        currency: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct OrderPlaced {
        total: Money,
        note: Option<String>,
    }
    impl Event for OrderPlaced {
        const EVENT_TYPE: &'static str = "OrderPlaced";
    }

    #[test]
    fn the_document_describes_the_delivered_event_with_the_payload_inside() {
        let [schema] = registry_schemas::<OrderPlaced>("com.example.orders")
            .try_into()
            .unwrap();
        assert_eq!(schema.name, "com.example.orders@OrderPlaced");
        let doc = &schema.content;
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["AWSEvent"]["x-amazon-events-detail-type"], "OrderPlaced");
        assert_eq!(
            schemas["AWSEvent"]["x-amazon-events-source"],
            "com.example.orders"
        );
        assert_eq!(
            schemas["OutboxEnvelope"]["properties"]["payload"]["$ref"],
            "#/components/schemas/OrderPlaced"
        );
        assert_eq!(
            schemas["OrderPlaced"]["properties"]["total"]["$ref"],
            "#/components/schemas/Money"
        );
        assert_eq!(schemas["OrderPlaced"]["properties"]["note"]["nullable"], true);
        assert!(schemas["Money"]["required"].as_array().unwrap().len() == 2);
    }

    #[test]
    fn every_envelope_field_the_relay_writes_is_described() {
        let event = OutboxEvent::builder("s", "OrderPlaced")
            .aggregate("Order", "o-1")
            .sequence(1)
            .payload_json("{}")
            .trace_parent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .metadata("tenant", "acme")
            .build(&SystemClock)
            .unwrap();
        let json: Value = serde_json::from_str(&event.to_json()).unwrap();
        let described = envelope(json!({}));
        for field in json.as_object().unwrap().keys() {
            assert!(
                described["properties"].get(field).is_some(),
                "{field} is not described"
            );
        }
    }
}
