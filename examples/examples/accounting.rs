//! The accounting service of the payment flow (see `payment.rs`).
//!
//! - `PUT /transactions/{payment}` records a payment's transaction (once,
//!   however often it is sent);
//! - `GET /transactions` lists them, with the correlation id each came with.
//!
//! ```text
//! PATRON_HTTP_DEFAULT_PORT=50002 cargo run -p examples --example accounting
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;

use patron::prelude::*;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Entry {
    amount_cents: u64,
    invoice: Option<String>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
struct Transaction {
    payment: String,
    amount_cents: u64,
    invoice: Option<String>,
    correlation_id: String,
}

#[derive(Default)]
struct Ledger(Mutex<BTreeMap<String, Transaction>>);

#[patron::route(PUT "/transactions/{payment}")]
async fn record(
    Path(payment): Path<String>,
    correlation_id: CorrelationId,
    ledger: Dep<Ledger>,
    Json(entry): Json<Entry>,
) -> Json<Transaction> {
    let mut all = ledger.0.lock().unwrap_or_else(|p| p.into_inner());
    let transaction = all
        .entry(payment.clone())
        .or_insert_with(|| Transaction {
            payment,
            amount_cents: entry.amount_cents,
            invoice: entry.invoice,
            correlation_id: correlation_id.as_str().to_string(),
        })
        .clone();
    Json(transaction)
}

#[patron::route(GET "/transactions")]
async fn list(ledger: Dep<Ledger>) -> Json<Vec<Transaction>> {
    let all = ledger.0.lock().unwrap_or_else(|p| p.into_inner());
    Json(all.values().cloned().collect())
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    Ok(service.provide(Ledger::default()))
}
