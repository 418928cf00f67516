use patron::prelude::*;

#[derive(Deserialize, schemars::JsonSchema)]
struct Order {
    id: u64,
}

struct Ledger;

#[patron::consumer(
    amqp = "orders",
    exchange = "shop",
    routing_key = "orders.*",
    declare = true,
    prefetch = 40,
    concurrency = 4,
    retries = 5,
    max_deliveries = 20,
    backoff = "250ms",
    on_failure = dlq,
    dlq = "orders.failed",
)]
async fn on_order(msg: Message<Json<Order>>, ledger: Dep<Ledger>) -> Result<(), patron::Error> {
    let _ = (&*ledger, msg.id, msg.correlation_id());
    Ok(())
}

#[patron::consumer(amqp = "audit", batch = 20, batch_timeout = "2s", on_failure = "drop")]
async fn on_audit(ledger: Dep<Ledger>, batch: Batch<String>) -> Result<(), std::io::Error> {
    let _ = &*ledger;
    for (i, msg) in batch.iter().enumerate() {
        if msg.payload().is_empty() {
            batch.nack(i, "empty");
        }
    }
    Ok(())
}

#[patron::consumer(amqp = "raw", on_failure = exit)]
async fn on_raw(msg: Message<bytes::Bytes>) {
    let _ = msg.payload().len();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Still ordinary functions.
    on_raw(Message::new(bytes::Bytes::from_static(b"x"))).await;
    let ledger = Dep::new(Ledger);
    on_audit(ledger, Batch::new(vec![Message::new(String::from("a"))]))
        .await
        .unwrap();
}
