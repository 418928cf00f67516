//! The payment service of the payment flow: three services that show
//! patron's clients and resilience together.
//!
//! `POST /payments` with `{"amount_cents": 1250}`:
//!
//! 1. asks the invoice service (`invoice.rs`, `INVOICE_URL`) for an invoice
//!    over HTTP, through a circuit breaker and retries. When the invoice
//!    service is down the payment still goes through, with the invoice
//!    `pending` (the fallback) — and once the breaker is open, without even
//!    trying, so a dead dependency costs nothing;
//! 2. records the transaction with the accounting service (`accounting.rs`,
//!    `ACCOUNTING_URL`), never faster than `ACCOUNTING_RATE` calls per
//!    second (an outbound rate limit: callers wait for their turn);
//! 3. publishes a `payment completed` event to Kafka (`PAYMENTS_TOPIC`,
//!    brokers from `PATRON_KAFKA_BROKERS`), waiting for the broker's ack.
//!
//! With `PATRON_DISCOVERY` set (e.g. `etcd://127.0.0.1:2379`), the invoice
//! service is found by name: every `invoice` instance registers itself and
//! payment calls `http://invoice.discover`, balanced over them — a dead
//! instance's calls go to a live one.
//!
//! Every call carries the request's correlation id and trace context, and
//! is a span and a metric (`/metrics`: `http_client_request_duration_seconds`,
//! `circuit_breaker_state{name="invoice"}`,
//! `kafka_producer_delivery_duration_seconds`).
//!
//! ```text
//! PATRON_HTTP_DEFAULT_PORT=50001 cargo run -p examples --example invoice &
//! PATRON_HTTP_DEFAULT_PORT=50002 cargo run -p examples --example accounting &
//! cargo run -p examples --example payment      # Kafka on 127.0.0.1:9092
//! curl -XPOST localhost:50000/payments -d '{"amount_cents":1250}' -H 'content-type: application/json'
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use patron::client::http::HttpClient;
use patron::client::kafka::{KafkaProducer, Record};
use patron::prelude::*;
use patron::reliability::{CircuitBreaker, RateLimit, Retry};
use serde_json::{Value, json};

/// The invoice service: its client (breaker + retry) and base URL.
struct Invoices {
    client: HttpClient,
    url: String,
}

/// The accounting service: its client (rate limited) and base URL.
struct Accounting {
    client: HttpClient,
    url: String,
}

/// Where payment events go.
struct Events {
    topic: String,
}

/// Numbers payments within this process.
#[derive(Default)]
struct Sequence(AtomicU64);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct PaymentRequest {
    amount_cents: u64,
}

#[derive(Debug, Deserialize)]
struct Invoice {
    id: String,
}

#[patron::route(POST "/payments")]
async fn pay(
    invoices: Dep<Invoices>,
    accounting: Dep<Accounting>,
    events: Dep<KafkaProducer>,
    topic: Dep<Events>,
    sequence: Dep<Sequence>,
    Json(request): Json<PaymentRequest>,
) -> Result<(StatusCode, Json<Value>), patron::Error> {
    if request.amount_cents == 0 {
        return Err(patron::Error::unprocessable(
            "amount_cents must be positive",
        ));
    }
    let n = sequence.0.fetch_add(1, Ordering::Relaxed) + 1;
    let payment = format!("PAY-{}-{n}", std::process::id());
    let amount_cents = request.amount_cents;

    // 1. Invoice, with a fallback: the payment does not fail with it.
    let url = format!("{}/invoices/{payment}", invoices.url);
    let invoice = match invoices
        .client
        .put_json::<_, Invoice>(&url, &json!({ "amount_cents": amount_cents }))
        .await
    {
        Ok(invoice) => json!({ "status": "issued", "id": invoice.id }),
        Err(e) => {
            tracing::warn!(payment = %payment, error = %e, "invoice service unavailable: invoice pending");
            json!({ "status": "pending", "reason": e.to_string() })
        }
    };

    // 2. Accounting, rate limited; without it the payment is not done.
    let url = format!("{}/transactions/{payment}", accounting.url);
    let entry = json!({ "amount_cents": amount_cents, "invoice": invoice.get("id") });
    accounting
        .client
        .put_json::<_, Value>(&url, &entry)
        .await
        .map_err(|e| patron::Error::unavailable(format!("cannot record payment {payment}: {e}")))?;

    // 3. The event, acknowledged by Kafka before we answer.
    let event = json!({ "payment": payment, "amount_cents": amount_cents, "invoice": invoice });
    let record = Record::json(topic.topic.as_str(), &event)?.key(payment.clone());
    let delivered = events.send(&record).await.map_err(|e| {
        patron::Error::unavailable(format!("cannot publish payment {payment}: {e}"))
    })?;
    tracing::info!(payment = %payment, offset = delivered.offset, "payment completed");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "payment": payment,
            "amount_cents": amount_cents,
            "invoice": invoice,
            "event": { "partition": delivered.partition, "offset": delivered.offset },
        })),
    ))
}

/// The invoice service by name when a registry is configured, else at its
/// usual local port.
fn default_invoice_url() -> &'static str {
    if std::env::var_os("PATRON_DISCOVERY").is_some() {
        "http://invoice.discover"
    } else {
        "http://127.0.0.1:50001"
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    let rate: u32 = env_or("ACCOUNTING_RATE", "50").parse().map_err(|e| {
        patron::Error::msg(format!(
            "ACCOUNTING_RATE must be a whole number of calls per second: {e}"
        ))
    })?;
    // Three failed calls in a row open the breaker for 10 s; each call is
    // tried up to 3 times (PUT is idempotent) within 2 s.
    let invoices = Invoices {
        client: HttpClient::builder()
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_millis(500))
            .retry(
                Retry::new(3)
                    .backoff(Duration::from_millis(50), Duration::from_millis(400))
                    .max_elapsed(Duration::from_secs(2)),
            )
            .circuit_breaker(
                CircuitBreaker::new("invoice")
                    .failure_threshold(3)
                    .open_timeout(Duration::from_secs(10)),
            )
            .build()?,
        url: env_or("INVOICE_URL", default_invoice_url()),
    };
    let accounting = Accounting {
        client: HttpClient::builder()
            .timeout(Duration::from_secs(5))
            .rate_limit(RateLimit::per_second("accounting", rate))
            .build()?,
        url: env_or("ACCOUNTING_URL", "http://127.0.0.1:50002"),
    };
    let events = KafkaProducer::from_config(service.current_config())?;
    Ok(service
        .provide(invoices)
        .provide(accounting)
        .provide(Events {
            topic: env_or("PAYMENTS_TOPIC", "payments"),
        })
        .provide(Sequence::default())
        .with_client(events))
}
