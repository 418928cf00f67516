//! `patron::client::http::HttpClient` against real servers: a patron route
//! calling another over HTTP (trace and correlation on both sides), and a
//! small axum peer made to fail (retries, `Retry-After`, circuit breaker).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use http::{HeaderMap, Method, StatusCode};
use patron::client::http::{HttpClient, HttpError};
use patron::prelude::*;
use patron::reliability::{CircuitBreaker, Retry};
use patron::test::TestServer;
use serde_json::{Value, json};

/// Where `/front` sends its call (the service's own address, known after
/// it started).
struct Back(OnceLock<String>);

#[patron::route(GET "/front")]
async fn front(client: Dep<HttpClient>, back: Dep<Back>) -> Result<Json<Value>, patron::Error> {
    let url = format!(
        "{}/back",
        back.0.get().map(String::as_str).unwrap_or_default()
    );
    Ok(Json(client.get_json(&url).await?))
}

#[patron::route(GET "/back")]
async fn back(headers: HeaderMap) -> Json<Value> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    Json(json!({
        "traceparent": get("traceparent"),
        "correlation_id": get("x-correlation-id"),
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_into_a_patron_route_carries_trace_and_correlation_id() {
    let back_url = Arc::new(Back(OnceLock::new()));
    let service = Service::new("http-client-tests")
        .provide(HttpClient::new().unwrap())
        .provide_arc(back_url.clone());
    let server = TestServer::start(service).await.unwrap();
    back_url.0.set(server.base_url().to_string()).unwrap();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let seen: Value = reqwest::Client::new()
        .get(server.url("/front"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-correlation-id", "corr-http-client")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["correlation_id"], "corr-http-client");
    let traceparent = seen["traceparent"].as_str().unwrap();
    assert_eq!(
        traceparent.split('-').nth(1),
        Some(trace_id),
        "{traceparent}"
    );

    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("http_client_request_duration_seconds_count")
                && l.contains(r#"http_request_method="GET""#)
                && l.contains(r#"http_response_status_code="200""#)
        ),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// Calls per path, and the path's scripted answers.
#[derive(Default)]
struct Peer {
    flaky: AtomicU32,
    bad: AtomicU32,
    later: AtomicU32,
    down: AtomicU32,
}

async fn flaky(State(p): State<Arc<Peer>>) -> StatusCode {
    if p.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn bad(State(p): State<Arc<Peer>>) -> (StatusCode, &'static str) {
    p.bad.fetch_add(1, Ordering::SeqCst);
    (StatusCode::BAD_REQUEST, "no such invoice")
}

async fn later(State(p): State<Arc<Peer>>) -> axum::response::Response {
    if p.later.fetch_add(1, Ordering::SeqCst) == 0 {
        (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

async fn down(State(p): State<Arc<Peer>>) -> StatusCode {
    p.down.fetch_add(1, Ordering::SeqCst);
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn peer() -> (String, Arc<Peer>) {
    let state = Arc::new(Peer::default());
    let app = axum::Router::new()
        .route("/flaky", axum::routing::any(flaky))
        .route("/bad", axum::routing::get(bad))
        .route("/later", axum::routing::get(later))
        .route("/down", axum::routing::get(down))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

fn retrying() -> HttpClient {
    HttpClient::builder()
        .retry(Retry::new(4).backoff(Duration::from_millis(1), Duration::from_millis(5)))
        .build()
        .unwrap()
}

#[tokio::test]
async fn retries_503_but_not_400_nor_a_post() {
    let (base, peer) = peer().await;
    let client = retrying();
    let ok = client
        .send(client.request(Method::GET, &format!("{base}/flaky")))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(peer.flaky.load(Ordering::SeqCst), 3, "two 503s retried");

    let bad = client
        .send(client.request(Method::GET, &format!("{base}/bad")))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(peer.bad.load(Ordering::SeqCst), 1, "a 400 is not retried");

    peer.flaky.store(0, Ordering::SeqCst);
    let post = client
        .send(client.request(Method::POST, &format!("{base}/flaky")))
        .await
        .unwrap();
    assert_eq!(post.status(), 503);
    assert_eq!(
        peer.flaky.load(Ordering::SeqCst),
        1,
        "POST is not idempotent"
    );
}

#[tokio::test]
async fn honours_retry_after() {
    let (base, peer) = peer().await;
    let client = retrying();
    let started = Instant::now();
    let ok = client
        .send(client.request(Method::GET, &format!("{base}/later")))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(peer.later.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_open_circuit_fails_fast_without_network_io() {
    let (base, peer) = peer().await;
    let breaker = CircuitBreaker::new("http-client-down")
        .failure_threshold(2)
        .open_timeout(Duration::from_secs(60));
    let client = HttpClient::builder()
        .circuit_breaker(breaker)
        .build()
        .unwrap();
    let url = format!("{base}/down");
    for _ in 0..2 {
        let r = client
            .send(client.request(Method::GET, &url))
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            500,
            "a 5xx is a response, and a breaker failure"
        );
    }
    let started = Instant::now();
    let err = client
        .send(client.request(Method::GET, &url))
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Open { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(
        peer.down.load(Ordering::SeqCst),
        2,
        "nothing sent while open"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("GET http://127.0.0.1:") && text.contains("http-client-down"),
        "{text}"
    );
}

#[tokio::test]
async fn errors_name_the_method_and_the_url_without_credentials() {
    let (base, _) = peer().await;
    let client = HttpClient::new().unwrap();
    let err = client
        .get_json::<Value>(&format!("{base}/bad"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, HttpError::Status { status, .. } if status == 400),
        "{text}"
    );
    assert!(
        text.contains("GET http://127.0.0.1:") && text.contains("no such invoice"),
        "{text}"
    );

    // A closed port: a transport error, with the password left out.
    let port = patron_tests::free_port();
    let err = client
        .get_json::<Value>(&format!("http://user:s3cret@127.0.0.1:{port}/x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HttpError::Transport { .. }), "{text}");
    assert!(
        text.starts_with(&format!("GET http://127.0.0.1:{port}/x")),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}
