//! `#[derive(Event)]` as a service uses it.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use outbox_core::{Event, Events, OutboxEvent, SystemClock, TypedEventError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
struct OrderPlaced {
    total: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(name = "order.paid.v1")]
struct OrderPaid {
    amount: u64,
}

#[derive(Debug, PartialEq, Event)]
enum OrderEvent {
    Placed(OrderPlaced),
    Paid(OrderPaid),
}

fn envelope(event: &impl Events) -> OutboxEvent {
    OutboxEvent::typed("com.example.orders", event)
        .aggregate("Order", "o-1")
        .sequence(1)
        .build(&SystemClock)
        .unwrap()
}

#[test]
fn a_struct_is_named_by_its_type_or_its_attribute() {
    assert_eq!(<OrderPlaced as Event>::EVENT_TYPE, "OrderPlaced");
    assert_eq!(<OrderPaid as Event>::EVENT_TYPE, "order.paid.v1");
}

#[test]
fn an_enum_writes_and_decodes_each_variant_by_its_type() {
    let paid: OrderEvent = OrderPaid { amount: 5 }.into();
    let event = envelope(&paid);
    assert_eq!(event.event_type(), "order.paid.v1");
    assert_eq!(event.payload_json(), r#"{"amount":5}"#);
    assert_eq!(event.decode::<OrderEvent>().unwrap(), paid);
    assert_eq!(
        envelope(&OrderPlaced { total: 3 })
            .decode::<OrderEvent>()
            .unwrap(),
        OrderEvent::Placed(OrderPlaced { total: 3 })
    );
    assert_eq!(OrderEvent::event_types(), ["OrderPlaced", "order.paid.v1"]);
}

#[test]
fn an_enum_names_an_unknown_type_and_every_known_one() {
    let shipped = OutboxEvent::builder("com.example.orders", "OrderShipped")
        .aggregate("Order", "o-1")
        .sequence(3)
        .payload_json("{}")
        .build(&SystemClock)
        .unwrap();
    assert_eq!(
        shipped.decode::<OrderEvent>(),
        Err(TypedEventError::UnknownType {
            event_type: "OrderShipped".into(),
            known: vec!["OrderPlaced", "order.paid.v1"],
        })
    );
}

#[test]
fn an_enum_exports_a_registry_schema_per_type() {
    let schemas = outbox_core::schema::registry_schemas::<OrderEvent>("com.example.orders");
    let names: Vec<&str> = schemas.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "com.example.orders@OrderPlaced",
            "com.example.orders@order.paid.v1"
        ]
    );
    assert_eq!(
        schemas[1].content["components"]["schemas"]["OutboxEnvelope"]["properties"]["payload"]["$ref"],
        "#/components/schemas/OrderPaid"
    );
    let components = &schemas[1].content["components"]["schemas"];
    assert!(
        components.get("OrderPlaced").is_none(),
        "each document holds its own type's schemas"
    );
}
