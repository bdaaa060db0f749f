//! An order service on outbox-relay: an HTTP API (API Gateway, payload
//! format 2.0) whose two commands change an `Order` and emit typed events,
//! saved together in one DynamoDB transaction.
//!
//! - `POST /orders` `{"orderId": "o-1", "total": 1999}` places an order
//!   (`OrderPlaced`);
//! - `POST /orders/{id}/payments` `{"amount": 1999}` pays it (`OrderPaid`).
//!
//! A request is one [`Command`]: its id is the client's `Idempotency-Key`
//! header, or API Gateway's request id when there is none, so a request
//! sent again after a timeout is answered "already applied" instead of
//! writing its events twice.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::HeaderValue;
use chrono::{DateTime, Utc};
use outbox_dynamodb::{Aggregate, Command, DynamoDbAggregates, Event, Saved, Versioned, WriteError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The events' `source`.
pub const SOURCE: &str = "com.example.orders";
/// The variable naming the table (the relay's `OUTBOX_TABLE_NAME`).
pub const ENV_TABLE_NAME: &str = "OUTBOX_TABLE_NAME";
/// How often a command is applied again after losing a race on the version.
const MAX_ATTEMPTS: usize = 3;

/// An order was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    /// The order.
    pub order_id: String,
    /// Its total, in cents.
    pub total: u64,
}

/// An order was paid (in full or in part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[serde(rename_all = "camelCase")]
pub struct OrderPaid {
    /// The order.
    pub order_id: String,
    /// The amount paid, in cents.
    pub amount: u64,
    /// Whether the order is now paid in full.
    pub settled: bool,
}

/// Every event of an order.
#[derive(Debug, Clone, PartialEq, Event)]
pub enum OrderEvent {
    /// See [`OrderPlaced`].
    Placed(OrderPlaced),
    /// See [`OrderPaid`].
    Paid(OrderPaid),
}

/// The aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub id: String,
    /// Its total, in cents.
    pub total: u64,
    /// What was paid so far, in cents.
    pub paid: u64,
}

impl Aggregate for Order {
    const AGGREGATE_TYPE: &'static str = "Order";
    type Event = OrderEvent;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

/// The store the handler saves orders in.
pub type Orders = DynamoDbAggregates;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// `POST /orders`.
    Place {
        /// The new order's id.
        order_id: String,
        /// Its total.
        total: u64,
    },
    /// `POST /orders/{id}/payments`.
    Pay {
        /// The order.
        order_id: String,
        /// The amount.
        amount: u64,
    },
}

/// Why a command cannot apply to the order as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Placing an order that exists.
    Exists,
    /// Paying an order that does not exist.
    NotFound,
    /// Paying more than is due.
    Overpaid {
        /// What is still due.
        due: u64,
    },
}

impl OrderCommand {
    /// The order it changes.
    pub fn order_id(&self) -> &str {
        match self {
            Self::Place { order_id, .. } | Self::Pay { order_id, .. } => order_id,
        }
    }

    /// Applies the command to the order as loaded (`None`: not stored):
    /// the new state and its events, or why not.
    pub fn apply(
        &self,
        order: Option<Versioned<Order>>,
    ) -> Result<(Versioned<Order>, Vec<OrderEvent>), Refusal> {
        match (self, order) {
            (Self::Place { .. }, Some(_)) => Err(Refusal::Exists),
            (Self::Place { order_id, total }, None) => {
                let order = Versioned::new(Order {
                    id: order_id.clone(),
                    total: *total,
                    paid: 0,
                });
                let placed = OrderPlaced {
                    order_id: order_id.clone(),
                    total: *total,
                };
                Ok((order, vec![placed.into()]))
            }
            (Self::Pay { .. }, None) => Err(Refusal::NotFound),
            (Self::Pay { order_id, amount }, Some(mut order)) => {
                let due = order.state.total - order.state.paid;
                if *amount > due {
                    return Err(Refusal::Overpaid { due });
                }
                order.state.paid += amount;
                let paid = OrderPaid {
                    order_id: order_id.clone(),
                    amount: *amount,
                    settled: order.state.paid == order.state.total,
                };
                Ok((order, vec![paid.into()]))
            }
        }
    }
}

/// Handles one API Gateway request: parse, then load, apply and save (again
/// if another request changed the order meanwhile).
pub async fn handle(orders: &Orders, request: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let (command, order_command) = match parse(&request) {
        Ok(parsed) => parsed,
        Err(reason) => return response(400, &json!({ "error": reason })),
    };
    for _ in 0..MAX_ATTEMPTS {
        let loaded = match orders.load::<Order>(order_command.order_id()).await {
            Ok(loaded) => loaded,
            Err(e) => return failure(&e),
        };
        let (order, events) = match order_command.apply(loaded) {
            Ok(applied) => applied,
            Err(refusal) => return refused(&command, order_command.order_id(), orders, refusal).await,
        };
        match orders.save(&command, &order, &events).await {
            Ok(Saved::Committed { version, event_ids }) => {
                return response(
                    201,
                    &json!({ "orderId": order.state.id, "version": version, "eventIds": event_ids }),
                );
            }
            Ok(_) => return already_applied(order_command.order_id()),
            Err(WriteError::ConditionFailed { .. }) => continue,
            Err(e) => return failure(&e),
        }
    }
    response(
        409,
        &json!({ "error": "the order kept changing; send the request again" }),
    )
}

/// A refusal may answer a retry of a command that was applied (the order
/// it placed exists now, the amount it paid is no longer due): then the
/// request succeeded before, and says so.
async fn refused(
    command: &Command,
    order_id: &str,
    orders: &Orders,
    refusal: Refusal,
) -> ApiGatewayV2httpResponse {
    match orders.is_applied::<Order>(command, order_id).await {
        Ok(true) => return already_applied(order_id),
        Ok(false) => {}
        Err(e) => return failure(&e),
    }
    match refusal {
        Refusal::Exists => response(409, &json!({ "error": format!("order {order_id} exists") })),
        Refusal::NotFound => response(404, &json!({ "error": format!("no order {order_id}") })),
        Refusal::Overpaid { due } => response(
            422,
            &json!({ "error": format!("order {order_id} has {due} due; pay at most that") }),
        ),
    }
}

fn already_applied(order_id: &str) -> ApiGatewayV2httpResponse {
    response(200, &json!({ "orderId": order_id, "alreadyApplied": true }))
}

fn failure(e: &WriteError) -> ApiGatewayV2httpResponse {
    tracing::error!(error = %outbox_dynamodb::outbox_core::error_chain(e), "save failed");
    let status = if e.is_retryable() { 503 } else { 500 };
    response(status, &json!({ "error": e.to_string() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlaceBody {
    order_id: String,
    total: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    amount: u64,
}

/// The command a request carries, and its identity.
pub fn parse(request: &ApiGatewayV2httpRequest) -> Result<(Command, OrderCommand), String> {
    let context = &request.request_context;
    let id = request
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| context.request_id.clone())
        .ok_or("the request has neither an Idempotency-Key header nor a request id")?;
    let at = DateTime::<Utc>::from_timestamp_millis(context.time_epoch).unwrap_or_else(Utc::now);
    let command = Command::new(id, at).map_err(|e| e.to_string())?;
    let body = request.body.as_deref().unwrap_or("");
    let order_command = match request.route_key.as_deref() {
        Some("POST /orders") => {
            let body: PlaceBody = serde_json::from_str(body).map_err(|e| format!("body: {e}"))?;
            OrderCommand::Place {
                order_id: body.order_id,
                total: body.total,
            }
        }
        Some("POST /orders/{id}/payments") => {
            let body: PayBody = serde_json::from_str(body).map_err(|e| format!("body: {e}"))?;
            let order_id = request
                .path_parameters
                .get("id")
                .cloned()
                .ok_or("the path has no order id")?;
            OrderCommand::Pay {
                order_id,
                amount: body.amount,
            }
        }
        other => {
            return Err(format!(
                "no route {other:?}; routes: POST /orders, POST /orders/{{id}}/payments"
            ));
        }
    };
    Ok((command, order_command))
}

fn response(status: i64, body: &Value) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response
        .headers
        .insert("content-type", HeaderValue::from_static("application/json"));
    response.body = Some(Body::Text(body.to_string()));
    response
}

#[cfg(test)]
mod tests;
