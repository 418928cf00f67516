//! A RabbitMQ consumer service.
//!
//! - `#[patron::consumer]` `record_order` consumes JSON orders from the
//!   `orders` queue (declared at start), four at a time, retrying a failure
//!   3 times before dead-lettering it to `orders.dlq`;
//! - `POST /orders` takes a JSON order and publishes it to the queue with
//!   `patron::client::amqp::AmqpPublisher`, which passes the request's
//!   correlation id and trace context in the headers and waits for the
//!   broker's confirm;
//! - `GET /orders/stats` shows what the consumer recorded.
//!
//! An order with a negative amount fails: watch it retry, then land in
//! `orders.dlq`. A body that is not an order is refused at the door (400,
//! 415 or 422) and never published; one published by another producer is
//! dead-lettered at once.
//!
//! Run it with RabbitMQ on `PATRON_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`):
//!
//! ```text
//! cargo run -p examples --example orders
//! curl -XPOST localhost:50000/orders -d '{"id":1,"amount":9.5}' -H 'content-type: application/json'
//! curl localhost:50000/orders/stats
//! ```

use std::sync::Mutex;

use patron::client::amqp::{AmqpPublisher, Publishing};
use patron::prelude::*;

/// An order, as the route takes it and the consumer reads it.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
struct Order {
    id: u64,
    /// At most a million; a negative amount is accepted here and refused
    /// by the consumer.
    // The bound keeps the recorded total finite (schemathesis found huge
    // amounts summing to infinity, which JSON writes as `null`).
    #[schemars(range(max = MAX_AMOUNT))]
    amount: f64,
}

/// The largest amount an order may have.
const MAX_AMOUNT: f64 = 1_000_000.0;

// `POST /orders` publishes orders to the queue the consumer reads: the
// AsyncAPI document shows both sides.
patron::producer!(amqp = "orders", payload = Json<Order>);

/// What the consumer has recorded so far.
#[derive(Default, Clone, Serialize, schemars::JsonSchema)]
struct Stats {
    orders: u64,
    total: f64,
    last_correlation_id: Option<String>,
}

#[derive(Default)]
struct Ledger(Mutex<Stats>);

#[patron::consumer(
    amqp = "orders",
    declare = true,
    concurrency = 4,
    retries = 3,
    backoff = "200ms",
    dlq = "orders.dlq"
)]
async fn record_order(msg: Message<Json<Order>>, ledger: Dep<Ledger>) -> Result<(), patron::Error> {
    if msg.amount < 0.0 {
        return Err(patron::Error::unprocessable(format!(
            "order {} has a negative amount",
            msg.id
        )));
    }
    let mut stats = ledger.0.lock().unwrap_or_else(|p| p.into_inner());
    stats.orders += 1;
    stats.total += msg.amount;
    stats.last_correlation_id = Some(msg.correlation_id().to_string());
    tracing::info!(
        id = msg.id,
        amount = msg.amount,
        attempt = msg.attempt(),
        "order recorded"
    );
    Ok(())
}

/// The orders recorded so far.
#[patron::route(GET "/orders/stats")]
async fn order_stats(ledger: Dep<Ledger>) -> Json<Stats> {
    let stats = ledger.0.lock().unwrap_or_else(|p| p.into_inner());
    Json(stats.clone())
}

/// Publish an order to the `orders` queue; `202` once the broker confirmed it.
#[patron::route(POST "/orders")]
async fn place_order(
    publisher: Dep<AmqpPublisher>,
    Json(order): Json<Order>,
) -> Result<StatusCode, patron::Error> {
    if order.amount > MAX_AMOUNT {
        return Err(patron::Error::unprocessable(format!(
            "order {} exceeds the largest amount, {MAX_AMOUNT}",
            order.id
        )));
    }
    let body = serde_json::to_vec(&order)
        .map_err(|e| patron::Error::internal(format!("cannot encode order {}: {e}", order.id)))?;
    // The publisher carries the request's correlation id and trace context
    // to the consumer in the message headers, and waits for the confirm.
    let message = Publishing::to_queue("orders", body).content_type("application/json");
    publisher
        .publish(&message)
        .await
        .map_err(|e| patron::Error::unavailable(format!("cannot publish the order: {e}")))?;
    Ok(StatusCode::ACCEPTED)
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    let publisher = AmqpPublisher::from_config(service.current_config());
    Ok(service.provide(Ledger::default()).with_client(publisher))
}
