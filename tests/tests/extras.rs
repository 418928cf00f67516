//! HTTP extras: response compression negotiated by `Accept-Encoding`, CORS,
//! per-route rate limits, `X-App-Name`/`X-App-Version`, and status logging
//! (checked in the log output of a child process).

use std::io::Read;
use std::time::Duration;

use patron::http::cors::{Any, CorsLayer};
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::prom::{scrape, value};
use patron_tests::{Proc, eventually};
use serde_json::Value;

const CUSTOM: &str = env!("CARGO_BIN_EXE_custom");

fn big_text() -> String {
    "patron compresses repetitive bodies well. ".repeat(100)
}

#[patron::route(GET "/big")]
async fn big() -> String {
    big_text()
}

#[patron::route(GET "/tiny")]
async fn tiny() -> &'static str {
    "ok"
}

#[patron::route(DELETE "/big")]
async fn remove() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[patron::route(GET "/limited", rate_limit = "2/5s")]
async fn limited() -> &'static str {
    "within the limit"
}

/// A client that neither asks for nor decodes compressed responses, so the
/// tests see the encodings the service chose.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: String, encoding: Option<&str>) -> reqwest::Response {
    let mut req = client.get(url);
    if let Some(e) = encoding {
        req = req.header("accept-encoding", e);
    }
    req.send().await.expect("request sent")
}

fn encoding(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn compression_follows_accept_encoding_and_q_weights() {
    let server = TestServer::start(Service::new("compression"))
        .await
        .unwrap();
    let client = raw_client();

    let plain = get(&client, server.url("/big"), None).await;
    assert_eq!(encoding(&plain), None);
    assert_eq!(plain.text().await.unwrap(), big_text());

    let gzip = get(&client, server.url("/big"), Some("gzip")).await;
    assert_eq!(encoding(&gzip), Some("gzip".into()));
    assert!(
        gzip.headers().get("x-correlation-id").is_some(),
        "the core still wraps compressed responses"
    );
    let bytes = gzip.bytes().await.unwrap();
    assert!(
        bytes.len() < big_text().len() / 4,
        "compressed to {} bytes",
        bytes.len()
    );
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(bytes.as_ref())
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, big_text());

    let weighted = get(
        &client,
        server.url("/big"),
        Some("gzip;q=0.5, br;q=1.0, deflate;q=0.1"),
    )
    .await;
    assert_eq!(encoding(&weighted), Some("br".into()));
    let zstd = get(&client, server.url("/big"), Some("zstd")).await;
    assert_eq!(encoding(&zstd), Some("zstd".into()));
    let deflate = get(&client, server.url("/big"), Some("deflate")).await;
    assert_eq!(encoding(&deflate), Some("deflate".into()));
    let refused = get(&client, server.url("/big"), Some("gzip;q=0")).await;
    assert_eq!(encoding(&refused), None, "q=0 refuses an encoding");

    let small = get(&client, server.url("/tiny"), Some("gzip")).await;
    assert_eq!(
        encoding(&small),
        None,
        "tiny bodies are not worth compressing"
    );
    let no_content = client
        .delete(server.url("/big"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(no_content.status(), 204);
    assert_eq!(encoding(&no_content), None);
    let metrics = get(&client, server.url("/metrics"), Some("gzip")).await;
    assert_eq!(
        encoding(&metrics),
        None,
        "management routes are never compressed"
    );

    let mut off = Service::new("no-compression");
    off.config_mut().http_compression = false;
    let server_off = TestServer::start(off).await.unwrap();
    assert_eq!(
        encoding(&get(&client, server_off.url("/big"), Some("gzip")).await),
        None
    );
    server_off.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cors_answers_preflight_and_marks_responses() {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([http::Method::GET, http::Method::POST]);
    let server = TestServer::start(Service::new("cors").with_cors(cors))
        .await
        .unwrap();
    let client = raw_client();
    let preflight = client
        .request(http::Method::OPTIONS, server.url("/big"))
        .header("origin", "https://example.org")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        methods.contains("GET") && methods.contains("POST"),
        "{methods}"
    );
    let simple = client
        .get(server.url("/tiny"))
        .header("origin", "https://example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(simple.headers()["access-control-allow-origin"], "*");
    server.shutdown().await.unwrap();

    let without = TestServer::start(Service::new("no-cors")).await.unwrap();
    let plain = client
        .get(without.url("/tiny"))
        .header("origin", "https://example.org")
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("access-control-allow-origin").is_none());
    without.shutdown().await.unwrap();
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let server = TestServer::start(Service::new("rate")).await.unwrap();
    let client = raw_client();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..3 {
        let resp = client.get(server.url("/limited")).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            limited = Some(resp);
        }
    }
    assert_eq!(statuses, vec![200, 200, 429]);
    let resp = limited.unwrap();
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=3).contains(&retry),
        "one token comes back every 2.5 s; retry after {retry}"
    );
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(resp.headers().get("x-correlation-id").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 429);
    // Other routes are not limited by this one's bucket.
    assert_eq!(
        client
            .get(server.url("/tiny"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The bucket refills.
    let refilled = eventually(Duration::from_secs(6), || {
        let req = client.get(server.url("/limited")).send();
        async move { req.await.map(|r| r.status() == 200).unwrap_or(false) }
    })
    .await;
    assert!(refilled);
    let samples = scrape(&client, &server.url("/metrics")).await;
    let limited = value(
        &samples,
        "http_server_request_duration_seconds_count",
        &[
            ("http_route", "/limited"),
            ("http_response_status_code", "429"),
        ],
    );
    assert!(limited.is_some_and(|n| n >= 1.0), "429s are measured");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn app_headers_name_the_service_on_user_routes() {
    let server = TestServer::start(Service::new("billing").version("2.3.4").with_app_headers())
        .await
        .unwrap();
    let client = raw_client();
    let resp = client.get(server.url("/tiny")).send().await.unwrap();
    assert_eq!(resp.headers()["x-app-name"], "billing");
    assert_eq!(resp.headers()["x-app-version"], "2.3.4");
    let alive = client.get(server.url("/alive")).send().await.unwrap();
    assert!(alive.headers().get("x-app-name").is_none());
    server.shutdown().await.unwrap();

    let plain = TestServer::start(Service::new("billing")).await.unwrap();
    let resp = client.get(plain.url("/tiny")).send().await.unwrap();
    assert!(resp.headers().get("x-app-name").is_none());
    plain.shutdown().await.unwrap();
}

#[tokio::test]
async fn matching_statuses_are_logged_with_body_and_others_get_a_debug_line() {
    let mut proc = Proc::spawn(
        CUSTOM,
        &[
            ("PATRON_HTTP_STATUS_ERROR_LOGGING", "404;[500,600)"),
            ("PATRON_LOG_LEVEL", "debug"),
        ],
    );
    proc.wait_alive().await;
    let client = raw_client();
    let missing = client
        .get(proc.url("/no/such/thing"))
        .header("x-correlation-id", "log-404")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body = missing.text().await.unwrap();
    client
        .get(proc.url("/visits"))
        .header("x-correlation-id", "log-200")
        .send()
        .await
        .unwrap();

    let found = eventually(Duration::from_secs(5), || {
        let logs = proc.json_logs();
        async move {
            logs.iter()
                .any(|l| l["message"] == "request served" && l["correlation_id"] == "log-200")
        }
    })
    .await;
    assert!(found, "{:?}", proc.stdout());
    let logs = proc.json_logs();
    let failed: Vec<&Value> = logs
        .iter()
        .filter(|l| l["message"] == "request failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let line = failed[0];
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["http.response.status_code"], 404);
    assert_eq!(line["http.route"], "unmatched");
    assert_eq!(line["http.request.method"], "GET");
    assert_eq!(line["correlation_id"], "log-404");
    assert_eq!(line["body"], body);
    assert!(line["latency_ms"].as_f64().is_some_and(|l| l >= 0.0));
    let served = logs
        .iter()
        .find(|l| l["message"] == "request served" && l["correlation_id"] == "log-200")
        .unwrap();
    assert_eq!(served["level"], "DEBUG");
    assert_eq!(served["http.route"], "/visits");
    assert_eq!(served["http.response.status_code"], 200);
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(0));
}
