use patron::prelude::*;

#[derive(Deserialize, schemars::JsonSchema)]
struct Payment {
    id: u64,
}

struct Ledger;

#[patron::consumer(
    kafka = ["payments", "refunds"],
    group = "accounting",
    concurrency = 4,
    retries = 3,
    backoff = "200ms",
    dlq = "payments.dlq",
)]
async fn record(msg: Message<Json<Payment>>, ledger: Dep<Ledger>) -> Result<(), patron::Error> {
    let _ = (&*ledger, msg.id);
    Ok(())
}

#[patron::consumer(kafka = "audit", group = "auditors", on_failure = skip)]
async fn audit(msg: Message<String>) {
    let _ = msg.payload();
}

// Only the latest state per account matters: the last record per key.
#[patron::consumer(
    kafka = "balances",
    group = "projector",
    batch = 500,
    batch_timeout = "250ms",
    dedup_by_key = true,
    on_failure = skip,
)]
async fn project(batch: Batch<Json<Payment>>) -> Result<(), patron::Error> {
    for msg in &batch {
        let _ = msg.id;
    }
    Ok(())
}

fn main() {}
