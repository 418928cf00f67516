//! `GET /metrics`: the Prometheus text format is parsed and the HTTP server
//! metrics are checked against a known request mix, labelled by route
//! template; process, runtime and user metrics sit on the same registry.

use std::time::Duration;

use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::prom::{scrape, value};
use prometheus::IntCounter;

#[patron::route(GET "/items/{id}")]
async fn item(Path(id): Path<u32>) -> String {
    format!("item {id}")
}

#[patron::route(POST "/items")]
async fn create(body: String) -> (StatusCode, String) {
    (StatusCode::CREATED, body)
}

#[patron::route(GET "/quiet", trace = false)]
async fn quiet() -> &'static str {
    "not measured"
}

#[patron::route(GET "/slow")]
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(600)).await;
    "done"
}

struct Orders(IntCounter);

#[patron::route(POST "/orders")]
async fn order(orders: Dep<Orders>, metrics: Dep<Metrics>) -> String {
    orders.0.inc();
    // Handlers can read the registry too.
    let text = metrics.render();
    text.lines()
        .filter(|l| l.starts_with("orders_total"))
        .collect()
}

fn service() -> Service {
    let svc = Service::new("metrics-tests");
    let orders = IntCounter::new("orders_total", "Orders accepted.").expect("counter");
    svc.metrics().register(orders.clone()).expect("register");
    svc.provide(Orders(orders))
}

#[tokio::test]
async fn request_mix_is_counted_by_route_template_method_and_status() {
    let server = TestServer::start(service()).await.unwrap();
    let client = reqwest::Client::new();
    for id in 1..=3 {
        assert_eq!(
            client
                .get(server.url(&format!("/items/{id}")))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        client
            .get(server.url("/items/abc"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    for _ in 0..2 {
        assert_eq!(
            client
                .post(server.url("/items"))
                .body("x")
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }
    assert_eq!(
        client
            .get(server.url("/nowhere"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .delete(server.url("/items/1"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    for _ in 0..4 {
        assert_eq!(
            client
                .get(server.url("/quiet"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    for _ in 0..2 {
        client.get(server.url("/alive")).send().await.unwrap();
    }

    let samples = scrape(&client, &server.url("/metrics")).await;
    let count = |method, route, status| {
        value(
            &samples,
            "http_server_request_duration_seconds_count",
            &[
                ("http_request_method", method),
                ("http_route", route),
                ("http_response_status_code", status),
            ],
        )
    };
    assert_eq!(count("GET", "/items/{id}", "200"), Some(3.0));
    assert_eq!(count("GET", "/items/{id}", "400"), Some(1.0));
    assert_eq!(count("POST", "/items", "201"), Some(2.0));
    assert_eq!(count("GET", "unmatched", "404"), Some(1.0));
    assert_eq!(count("DELETE", "unmatched", "405"), Some(1.0));
    // trace = false routes and management routes are not measured; raw paths never appear.
    let routes: Vec<&String> = samples
        .iter()
        .filter(|(n, _, _)| n.starts_with("http_server_request_duration_seconds"))
        .filter_map(|(_, l, _)| l.get("http_route"))
        .collect();
    assert!(
        routes
            .iter()
            .all(|r| ["/items/{id}", "/items", "unmatched"].contains(&r.as_str())),
        "{routes:?}"
    );
    // Buckets are cumulative and end in +Inf equal to the count.
    let inf = value(
        &samples,
        "http_server_request_duration_seconds_bucket",
        &[
            ("http_route", "/items/{id}"),
            ("http_response_status_code", "200"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(inf, Some(3.0));
    let sum = value(
        &samples,
        "http_server_request_duration_seconds_sum",
        &[
            ("http_route", "/items/{id}"),
            ("http_response_status_code", "200"),
        ],
    )
    .unwrap();
    assert!(sum > 0.0 && sum < 3.0, "sum of three fast requests: {sum}");
    assert_eq!(
        value(&samples, "http_server_active_requests", &[]),
        Some(0.0)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn active_requests_gauge_follows_in_flight_requests() {
    let server = TestServer::start(service()).await.unwrap();
    let client = reqwest::Client::new();
    let slow = tokio::spawn(client.get(server.url("/slow")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = scrape(&client, &server.url("/metrics")).await;
    assert_eq!(
        value(&during, "http_server_active_requests", &[]),
        Some(1.0)
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    let after = scrape(&client, &server.url("/metrics")).await;
    assert_eq!(value(&after, "http_server_active_requests", &[]), Some(0.0));
    let slow_sum = value(
        &after,
        "http_server_request_duration_seconds_sum",
        &[("http_route", "/slow")],
    )
    .unwrap();
    assert!(
        slow_sum >= 0.6,
        "the slow request took at least 600 ms: {slow_sum}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn process_runtime_and_user_metrics_share_the_registry() {
    let server = TestServer::start(service()).await.unwrap();
    let client = reqwest::Client::new();
    let body = client
        .post(server.url("/orders"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body, "orders_total 1",
        "the handler saw its own counter through Dep<Metrics>"
    );
    let samples = scrape(&client, &server.url("/metrics")).await;
    assert_eq!(value(&samples, "orders_total", &[]), Some(1.0));
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "tokio_workers",
        "tokio_alive_tasks",
    ] {
        let v = value(&samples, name, &[]).unwrap_or_else(|| panic!("{name} missing"));
        assert!(v >= 0.0, "{name} = {v}");
    }
    assert!(value(&samples, "process_resident_memory_bytes", &[]).unwrap() > 1_000_000.0);
    assert!(value(&samples, "tokio_workers", &[]).unwrap() >= 1.0);
    server.shutdown().await.unwrap();
}
