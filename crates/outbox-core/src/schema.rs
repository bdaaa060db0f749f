//! JSON Schemas of typed events, in the form Amazon EventBridge's schema
//! registry takes (`OpenApi3`), so consumers can generate bindings.
//!
//! Each document describes the whole event a rule delivers: the EventBridge
//! fields, the envelope in `detail`, and the event type's payload, with the
//! `x-amazon-events-source` and `x-amazon-events-detail-type` extensions the
//! registry's discovered schemas carry.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::{EnvelopeError, Events};

/// Where the registry document keeps its schemas.
const COMPONENTS: &str = "#/components/schemas/";
/// Names the document itself uses.
const OWN_NAMES: [&str; 2] = ["AWSEvent", "OutboxEnvelope"];

/// The registry document of one event type.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySchema {
    /// The event type name.
    pub event_type: String,
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
            let payload = payload.to_value();
            let used = referenced(&payload, &definitions);
            document(source, event_type, payload, used)
        })
        .collect()
}

/// The definitions `root` needs, directly or through one another: each
/// document holds its own event type's, not every type's of the set.
fn referenced(root: &Value, definitions: &Map<String, Value>) -> Map<String, Value> {
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(name) = map
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix(COMPONENTS))
                {
                    out.push(name);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut used = Map::new();
    let mut pending = Vec::new();
    refs(root, &mut pending);
    while let Some(name) = pending.pop() {
        if used.contains_key(name) {
            continue;
        }
        if let Some(schema) = definitions.get(name) {
            used.insert(name.to_owned(), schema.clone());
            refs(schema, &mut pending);
        }
    }
    used
}

/// The registry document of one event type whose payload is described by
/// a JSON Schema of its own (written by hand, or by another language's
/// tools): its `$defs` or `definitions` move to the document's components
/// and their references follow. The schema itself is stored under the event
/// type's name.
pub fn registry_schema_from_json(
    source: &str,
    event_type: &str,
    payload_schema: Value,
) -> Result<RegistrySchema, EnvelopeError> {
    let Value::Object(mut payload) = payload_schema else {
        return Err(invalid("the payload schema must be a JSON object".into()));
    };
    let mut definitions = Map::new();
    for key in ["$defs", "definitions"] {
        match payload.remove(key) {
            None => {}
            Some(Value::Object(defs)) => definitions.extend(defs),
            Some(_) => return Err(invalid(format!("`{key}` must be an object of schemas"))),
        }
    }
    payload.remove("$schema");
    payload.remove("$id");
    if definitions.contains_key(event_type) || OWN_NAMES.contains(&event_type) {
        return Err(invalid(format!(
            "a definition is named {event_type:?}, the name the payload itself takes; rename it"
        )));
    }
    if let Some(name) = OWN_NAMES.iter().find(|n| definitions.contains_key(**n)) {
        return Err(invalid(format!(
            "a definition is named {name:?}, which the document uses; rename it"
        )));
    }
    definitions.insert(event_type.to_owned(), Value::Object(payload));
    let mut definitions = Value::Object(definitions);
    rewrite_refs(&mut definitions)?;
    let Value::Object(definitions) = definitions else {
        return Err(invalid("the definitions must be objects".into()));
    };
    let payload_ref = json!({ "$ref": format!("{COMPONENTS}{event_type}") });
    Ok(document(source, event_type, payload_ref, definitions))
}

/// Points every local reference at the document's components, and refuses
/// the others (a registry document holds all its schemas).
fn rewrite_refs(value: &mut Value) -> Result<(), EnvelopeError> {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                let name = ["#/$defs/", "#/definitions/"]
                    .iter()
                    .find_map(|prefix| target.strip_prefix(prefix))
                    .ok_or_else(|| {
                        invalid(format!(
                            "reference {target:?} is not to a local definition (#/$defs/... or #/definitions/...)"
                        ))
                    })?;
                *target = format!("{COMPONENTS}{name}");
            }
            map.values_mut().try_for_each(rewrite_refs)
        }
        Value::Array(items) => items.iter_mut().try_for_each(rewrite_refs),
        _ => Ok(()),
    }
}

fn invalid(reason: String) -> EnvelopeError {
    EnvelopeError::Invalid {
        field: "payload_schema".into(),
        reason,
    }
}

/// The document: the delivered event, the envelope, the payload.
fn document(
    source: &str,
    event_type: &str,
    payload: Value,
    mut schemas: Map<String, Value>,
) -> RegistrySchema {
    schemas.insert("AWSEvent".into(), aws_event(source, event_type));
    schemas.insert("OutboxEnvelope".into(), envelope(payload));
    RegistrySchema {
        event_type: event_type.to_owned(),
        name: format!("{source}@{event_type}"),
        content: json!({
            "openapi": "3.0.0",
            "info": { "version": "1.0.0", "title": event_type },
            "paths": {},
            "components": { "schemas": Value::Object(schemas) },
        }),
    }
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
    fn a_json_schema_of_its_own_moves_its_definitions_into_the_components() {
        let payload = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": { "total": { "$ref": "#/$defs/Money" }, "lines": { "type": "array", "items": { "$ref": "#/definitions/Line" } } },
            "$defs": { "Money": { "type": "integer" } },
            "definitions": { "Line": { "type": "object", "properties": { "price": { "$ref": "#/$defs/Money" } } } },
        });
        let schema = registry_schema_from_json("com.example.orders", "OrderPlaced", payload).unwrap();
        let schemas = &schema.content["components"]["schemas"];
        assert_eq!(
            schemas["OutboxEnvelope"]["properties"]["payload"]["$ref"],
            "#/components/schemas/OrderPlaced"
        );
        assert_eq!(
            schemas["OrderPlaced"]["properties"]["total"]["$ref"],
            "#/components/schemas/Money"
        );
        assert_eq!(
            schemas["Line"]["properties"]["price"]["$ref"],
            "#/components/schemas/Money"
        );
        assert!(schemas["OrderPlaced"].get("$schema").is_none());
    }

    #[test]
    fn a_json_schema_with_a_foreign_reference_or_a_clashing_name_is_refused() {
        let foreign = json!({ "properties": { "a": { "$ref": "https://example.com/a.json" } } });
        let err = registry_schema_from_json("s", "T", foreign)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not to a local definition"), "{err}");
        let clash = json!({ "$defs": { "OutboxEnvelope": {} } });
        let err = registry_schema_from_json("s", "T", clash)
            .unwrap_err()
            .to_string();
        assert!(err.contains("which the document uses; rename it"), "{err}");
        let err = registry_schema_from_json("s", "T", json!([]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a JSON object"), "{err}");
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
