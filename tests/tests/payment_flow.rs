//! The payment-flow example as three real processes (`payment`, `invoice`,
//! `accounting`) with Kafka (`PATRON_TEST_KAFKA_BROKERS`): a payment is
//! invoiced, accounted and published with the caller's correlation id;
//! with the invoice service down it still goes through with the invoice
//! pending, and once the circuit breaker is open, without calling it.

use patron_tests::{Proc, prom, service};
use serde_json::{Value, json};

const PAYMENT: &str = env!("CARGO_BIN_EXE_payment");
const INVOICE: &str = env!("CARGO_BIN_EXE_invoice");
const ACCOUNTING: &str = env!("CARGO_BIN_EXE_accounting");

async fn pay(
    client: &reqwest::Client,
    payment: &Proc,
    correlation: &str,
    cents: u64,
) -> (u16, Value) {
    let resp = client
        .post(payment.url("/payments"))
        .header("x-correlation-id", correlation)
        .json(&json!({ "amount_cents": cents }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn payments_are_invoiced_accounted_and_published_and_survive_a_dead_invoice_service() {
    let Some(brokers) = service("PATRON_TEST_KAFKA_BROKERS", "a Kafka-compatible broker") else {
        return;
    };
    let topic = format!("patron-test-payments-{}", uuid::Uuid::new_v4().simple());
    let invoice = Proc::spawn(INVOICE, &[]);
    let accounting = Proc::spawn(ACCOUNTING, &[]);
    invoice.wait_alive().await;
    accounting.wait_alive().await;
    let payment = Proc::spawn(
        PAYMENT,
        &[
            ("INVOICE_URL", &invoice.url("")),
            ("ACCOUNTING_URL", &accounting.url("")),
            ("PAYMENTS_TOPIC", &topic),
            ("PATRON_KAFKA_BROKERS", &brokers),
        ],
    );
    payment.wait_alive().await;
    let client = reqwest::Client::new();

    // Everything up: invoiced, accounted, published.
    let (status, paid) = pay(&client, &payment, "corr-pay-1", 1250).await;
    assert_eq!(status, 201, "{paid}");
    assert_eq!(paid["invoice"]["status"], "issued", "{paid}");
    let invoice_id = paid["invoice"]["id"].as_str().unwrap().to_string();
    let payment_id = paid["payment"].as_str().unwrap().to_string();
    let invoices = get(&client, invoice.url("/invoices")).await;
    assert_eq!(invoices[0]["id"], invoice_id.as_str());
    assert_eq!(invoices[0]["payment"], payment_id.as_str());
    assert_eq!(invoices[0]["correlation_id"], "corr-pay-1", "{invoices}");
    let ledger = get(&client, accounting.url("/transactions")).await;
    assert_eq!(ledger[0]["invoice"], invoice_id.as_str(), "{ledger}");
    assert_eq!(ledger[0]["correlation_id"], "corr-pay-1", "{ledger}");

    // The invoice service dies: payments go on, invoices pending.
    drop(invoice);
    let (status, paid) = pay(&client, &payment, "corr-pay-2", 700).await;
    assert_eq!(status, 201, "{paid}");
    assert_eq!(paid["invoice"]["status"], "pending", "{paid}");
    // Three failed attempts opened the breaker: the next payment does not
    // even try to call.
    let samples = prom::scrape(&client, &payment.url("/metrics")).await;
    assert_eq!(
        prom::value(&samples, "circuit_breaker_state", &[("name", "invoice")]),
        Some(2.0),
        "open"
    );
    let (status, paid) = pay(&client, &payment, "corr-pay-3", 300).await;
    assert_eq!(status, 201, "{paid}");
    assert_eq!(paid["invoice"]["status"], "pending");
    let reason = paid["invoice"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("circuit breaker \"invoice\" is open"),
        "{reason}"
    );
    let ledger = get(&client, accounting.url("/transactions")).await;
    assert_eq!(ledger.as_array().unwrap().len(), 3, "{ledger}");
    assert!(
        ledger[1]["invoice"].is_null() && ledger[2]["invoice"].is_null(),
        "{ledger}"
    );

    // Bad input loses nothing and says why.
    let (status, problem) = pay(&client, &payment, "corr-pay-4", 0).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("amount_cents"),
        "{problem}"
    );

    // Three events, the first with its invoice.
    let brokers2 = brokers.clone();
    let events =
        tokio::task::spawn_blocking(move || patron_tests::kafka::stored(&brokers2, &topic))
            .await
            .unwrap();
    let mut events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // Keyed by payment, so possibly on several partitions: order by number.
    let number = |e: &Value| -> u64 {
        let id = e["payment"].as_str().unwrap();
        id.rsplit('-').next().unwrap().parse().unwrap()
    };
    events.sort_by_key(number);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["payment"], payment_id.as_str());
    assert_eq!(events[0]["invoice"]["id"], invoice_id.as_str());
    assert_eq!(events[1]["invoice"]["status"], "pending");
}
