//! The payment-flow example as three real processes (`payment`, `invoice`,
//! `accounting`) with Kafka (`PATRON_TEST_KAFKA_BROKERS`): a payment is
//! invoiced, accounted and published with the caller's correlation id;
//! with the invoice service down it still goes through with the invoice
//! pending, and once the circuit breaker is open, without calling it.
//! With etcd (`PATRON_TEST_ETCD_ENDPOINT`), payment finds two invoice
//! instances by name, spreads its calls over them, and loses no payment
//! when one is SIGKILLed or SIGTERMed under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use patron::config::{DiscoveryBackend, DiscoveryConfig};
use patron::discovery::Discovery;
use patron_tests::{Proc, eventually, prom, service, unique};
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

/// Payments sent by `workers` concurrent loops until `stop`: how many were
/// invoiced, how many went through with the invoice pending, and the
/// failures (any other answer or no answer).
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(usize, usize, Vec<String>)>>,
}

impl Load {
    fn start(url: String, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|w| {
                let stop = Arc::clone(&stop);
                let url = url.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let (mut issued, mut pending, mut failed) = (0, 0, Vec::new());
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let sent = client
                            .post(&url)
                            .header("x-correlation-id", format!("load-{w}-{i}"))
                            .json(&json!({ "amount_cents": 100 }))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 201 => {
                                let body: Value = r.json().await.unwrap_or_default();
                                match body["invoice"]["status"].as_str() {
                                    Some("issued") => issued += 1,
                                    _ => {
                                        pending += 1;
                                        failed.push(format!("pending: {body}"));
                                    }
                                }
                            }
                            Ok(r) => failed.push(format!("status {}", r.status())),
                            Err(e) => failed.push(e.to_string()),
                        }
                    }
                    (issued, pending, failed)
                })
            })
            .collect();
        Load { stop, workers }
    }

    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = (0, 0, Vec::new());
        for w in self.workers {
            let (i, p, f) = w.await.unwrap();
            total.0 += i;
            total.1 += p;
            total.2.extend(f);
        }
        total
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_finds_two_invoice_instances_in_etcd_and_loses_no_payment_when_one_is_killed_or_stopped()
 {
    let Some(brokers) = service("PATRON_TEST_KAFKA_BROKERS", "a Kafka-compatible broker") else {
        return;
    };
    let Some(etcd) = service("PATRON_TEST_ETCD_ENDPOINT", "etcd") else {
        return;
    };
    let registry_url = format!("etcd://{}", etcd.trim_start_matches("http://"));
    let name = unique("invoice");
    let invoice_env = [
        ("PATRON_DISCOVERY", registry_url.as_str()),
        ("PATRON_DISCOVERY_TTL", "3s"),
        ("PATRON_SERVICE_NAME", name.as_str()),
        ("PATRON_SHUTDOWN_DELAY", "2s"),
    ];
    let a = Proc::spawn(INVOICE, &invoice_env);
    let mut b = Proc::spawn(INVOICE, &invoice_env);
    let accounting = Proc::spawn(ACCOUNTING, &[]);
    a.wait_alive().await;
    b.wait_alive().await;
    accounting.wait_alive().await;
    let topic = unique("patron-test-payments");
    let payment = Proc::spawn(
        PAYMENT,
        &[
            ("PATRON_DISCOVERY", &registry_url),
            ("INVOICE_URL", &format!("http://{name}.discover")),
            ("ACCOUNTING_URL", &accounting.url("")),
            ("ACCOUNTING_RATE", "10000"),
            ("PAYMENTS_TOPIC", &topic),
            ("PATRON_KAFKA_BROKERS", &brokers),
        ],
    );
    payment.wait_alive().await;
    let config = DiscoveryConfig {
        backend: DiscoveryBackend::Etcd(vec![etcd.clone()]),
        ttl: Duration::from_secs(3),
        address: None,
    };
    let registry = Discovery::new(&config).unwrap();
    let listed = |ports: Vec<u16>| {
        let registry = registry.clone();
        let name = name.clone();
        async move {
            let mut now: Vec<u16> = registry
                .resolve(&name)
                .await
                .map(|i| i.iter().map(|i| i.http_port).collect())
                .unwrap_or_default();
            now.sort();
            let mut want = ports;
            want.sort();
            now == want
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || listed(vec![a.port, b.port])).await,
        "both invoice instances registered"
    );

    // Payments spread over both instances.
    let client = reqwest::Client::new();
    for i in 0..30 {
        let (status, paid) = pay(&client, &payment, &format!("corr-spread-{i}"), 100).await;
        assert_eq!(status, 201, "{paid}");
        assert_eq!(paid["invoice"]["status"], "issued", "{paid}");
    }
    let per_a = get(&client, a.url("/invoices"))
        .await
        .as_array()
        .unwrap()
        .len();
    let per_b = get(&client, b.url("/invoices"))
        .await
        .as_array()
        .unwrap()
        .len();
    eprintln!("30 payments: {per_a} invoiced by a, {per_b} by b");
    assert_eq!(per_a + per_b, 30);
    assert!(per_a >= 5 && per_b >= 5, "spread: a {per_a}, b {per_b}");

    // SIGKILL one instance under load: no payment fails or goes pending,
    // and it drops out of the registry within its lease's TTL.
    let load = Load::start(payment.url("/payments"), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(8), || listed(vec![b.port])).await,
        "the killed instance drops out"
    );
    let dropped_out = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (issued, pending, failed) = load.finish().await;
    eprintln!(
        "SIGKILL: dropped out of etcd after {dropped_out:?} (TTL 3 s); payments meanwhile: {issued} invoiced, {pending} pending, {} failed",
        failed.len()
    );
    let samples = prom::scrape(&client, &payment.url("/metrics")).await;
    let refused: f64 = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "http_client_request_duration_seconds_count"
                && l.get("http_response_status_code").map(String::as_str) == Some("error")
        })
        .map(|(_, _, v)| v)
        .sum();
    let ejections = prom::value(&samples, "discovery_ejections_total", &[("service", &name)]);
    eprintln!(
        "SIGKILL: {refused} calls to the dead instance failed and went to the live one; ejections {ejections:?}"
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(issued > 0);
    assert!(
        refused >= 1.0,
        "the dead instance was tried and the call moved on"
    );
    assert!(dropped_out < Duration::from_secs(5), "{dropped_out:?}");

    // SIGTERM another under load: it leaves the registry before its
    // listener closes (PATRON_SHUTDOWN_DELAY=2s), and no payment fails.
    let c = Proc::spawn(INVOICE, &invoice_env);
    c.wait_alive().await;
    assert!(
        eventually(Duration::from_secs(10), || listed(vec![b.port, c.port])).await,
        "the new instance registered"
    );
    let load = Load::start(payment.url("/payments"), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.signal(libc::SIGTERM);
    let stopped = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || listed(vec![c.port])).await,
        "the stopped instance leaves"
    );
    let left = stopped.elapsed();
    let still_listening = client.get(b.url("/alive")).send().await.is_ok();
    assert!(still_listening, "left the registry while still listening");
    assert_eq!(b.wait_exit(Duration::from_secs(10)), Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (issued, pending, failed) = load.finish().await;
    eprintln!(
        "SIGTERM: left etcd after {left:?}, listener closed ~2 s after the signal; payments meanwhile: {issued} invoiced, {pending} pending, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(left < Duration::from_secs(2), "{left:?}");
    let per_c = get(&client, c.url("/invoices"))
        .await
        .as_array()
        .unwrap()
        .len();
    assert!(per_c > 0, "the new instance took payments");
}
