//! The invoice service of the payment flow (see `payment.rs`).
//!
//! - `PUT /invoices/{payment}` issues the invoice for a payment — the same
//!   one again when asked twice, so the caller may retry;
//! - `GET /invoices` lists them, with the correlation id each request came
//!   with.
//!
//! ```text
//! PATRON_HTTP_DEFAULT_PORT=50001 cargo run -p examples --example invoice
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;

use patron::prelude::*;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Payment {
    amount_cents: u64,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
struct Invoice {
    id: String,
    payment: String,
    amount_cents: u64,
    correlation_id: String,
}

#[derive(Default)]
struct Invoices(Mutex<BTreeMap<String, Invoice>>);

#[patron::route(PUT "/invoices/{payment}")]
async fn issue(
    Path(payment): Path<String>,
    correlation_id: CorrelationId,
    invoices: Dep<Invoices>,
    Json(body): Json<Payment>,
) -> Json<Invoice> {
    let mut all = invoices.0.lock().unwrap_or_else(|p| p.into_inner());
    let number = all.len() + 1;
    let invoice = all
        .entry(payment.clone())
        .or_insert_with(|| Invoice {
            id: format!("INV-{number:05}"),
            payment,
            amount_cents: body.amount_cents,
            correlation_id: correlation_id.as_str().to_string(),
        })
        .clone();
    tracing::info!(invoice = %invoice.id, "invoice issued");
    Json(invoice)
}

#[patron::route(GET "/invoices")]
async fn list(invoices: Dep<Invoices>) -> Json<Vec<Invoice>> {
    let all = invoices.0.lock().unwrap_or_else(|p| p.into_inner());
    Json(all.values().cloned().collect())
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    Ok(service.provide(Invoices::default()))
}
