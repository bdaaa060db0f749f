//! The handler's pure parts: parsing the fixtures, applying commands.

use super::*;

fn fixture(name: &str) -> ApiGatewayV2httpRequest {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_retried_request_is_the_same_command() {
    let (first, place) = parse(&fixture("apigw-place-order.json")).unwrap();
    let (retry, again) = parse(&fixture("apigw-place-order-retry.json")).unwrap();
    assert_eq!(first.id(), "place-o-1");
    assert_eq!(first.key(), retry.key(), "the Idempotency-Key names the command");
    assert_eq!(place, again);
    assert_eq!(
        place,
        OrderCommand::Place {
            order_id: "o-1".into(),
            total: 1999
        }
    );
}

#[test]
fn without_an_idempotency_key_the_request_id_names_the_command() {
    let (command, pay) = parse(&fixture("apigw-pay-order.json")).unwrap();
    assert_eq!(command.id(), "req-pay-1");
    assert_eq!(command.at().timestamp_millis(), 1_767_225_610_000);
    assert_eq!(
        pay,
        OrderCommand::Pay {
            order_id: "o-1".into(),
            amount: 1999
        }
    );
}

#[test]
fn a_bad_body_names_the_field() {
    let err = parse(&fixture("apigw-bad-body.json")).unwrap_err();
    assert!(err.starts_with("body: unknown field `totl`"), "{err}");
}

#[test]
fn paying_applies_to_what_is_due() {
    let order = Versioned::loaded(
        Order {
            id: "o-1".into(),
            total: 100,
            paid: 40,
        },
        2,
        None,
    );
    let pay = |amount| OrderCommand::Pay {
        order_id: "o-1".into(),
        amount,
    };
    assert_eq!(
        pay(61).apply(Some(order.clone())).unwrap_err(),
        Refusal::Overpaid { due: 60 }
    );
    let (paid, events) = pay(60).apply(Some(order)).unwrap();
    assert_eq!(paid.state.paid, 100);
    assert_eq!(
        events,
        [OrderEvent::Paid(OrderPaid {
            order_id: "o-1".into(),
            amount: 60,
            settled: true
        })]
    );
    assert_eq!(pay(1).apply(None).unwrap_err(), Refusal::NotFound);
}

/// The events' registry documents are kept in `schemas/`, for consumers to
/// generate bindings from and for reviewers to see a payload change.
#[test]
fn the_registry_schemas_in_the_repository_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let schemas = outbox_dynamodb::outbox_core::schema::registry_schemas::<OrderEvent>(SOURCE);
    assert_eq!(schemas.len(), 2);
    for schema in schemas {
        let path = dir.join(format!("{}.json", schema.name));
        let text = serde_json::to_string_pretty(&schema.content).unwrap() + "\n";
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        // Compared as JSON: key order depends on serde_json's features.
        let stored: Option<serde_json::Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        assert!(
            stored.as_ref() == Some(&schema.content),
            "{} is not current: run `UPDATE_SCHEMAS=1 cargo test -p order-service`",
            path.display()
        );
    }
}
