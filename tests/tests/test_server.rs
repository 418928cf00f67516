//! `patron::test::TestServer` as a user's test meets it: request helpers
//! that return status, headers and typed JSON over real TCP, clear errors
//! for requests that cannot be sent, and no `#[patron::consumer]` started
//! unless the service names it.

use patron::consumer::Message;
use patron::prelude::*;
use patron::test::TestServer;
use serde_json::{Value, json};

#[derive(Deserialize, Serialize, Debug, PartialEq, schemars::JsonSchema)]
struct Order {
    item: String,
    quantity: u32,
}

#[patron::route(GET "/hello/{name}")]
async fn hello(Path(name): Path<String>, headers: HeaderMap) -> String {
    let tenant = headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    format!("hello, {name} of {tenant}")
}

#[patron::route(POST "/orders", auth = ApiKey)]
async fn order(id: CorrelationId, Json(order): Json<Order>) -> Json<Value> {
    Json(json!({ "order": order, "correlation_id": id.as_str() }))
}

#[patron::consumer(amqp = "patron-test-test-server-never")]
async fn never_started(_msg: Message<String>) {}

fn service() -> Service {
    Service::new("test-server").provide(ApiKey::new(["k"]))
}

#[tokio::test]
async fn requests_return_status_headers_and_typed_json() {
    let server = TestServer::start(service()).await.unwrap();
    let hello = server
        .get("/hello/ada")
        .header("x-tenant", "acme")
        .correlation_id("corr-1")
        .await
        .unwrap();
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.text(), "hello, ada of acme");
    assert_eq!(hello.header("x-correlation-id"), Some("corr-1"));

    let order = Order {
        item: "tea".into(),
        quantity: 2,
    };
    let accepted = server
        .post_json("/orders", &order)
        .api_key("k")
        .correlation_id("corr-2")
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    let body: Value = accepted.json().unwrap();
    assert_eq!(body["correlation_id"], "corr-2");
    let echoed: Order = serde_json::from_value(body["order"].clone()).unwrap();
    assert_eq!(echoed, order);

    let refused = server.post_json("/orders", &order).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let not_json = server
        .post("/orders")
        .api_key("k")
        .header("content-type", "application/json")
        .body("{not json")
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let err = not_json.json::<Order>().unwrap_err().to_string();
    assert!(err.contains("400 Bad Request"), "{err}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_that_cannot_be_sent_says_why() {
    let server = TestServer::start(service()).await.unwrap();
    let err = server
        .get("/hello/ada")
        .header("bad header", "x")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GET /hello/ada") && err.contains("\"bad header\""),
        "{err}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn consumers_start_only_when_the_service_names_them() {
    let server = TestServer::start(service()).await.unwrap();
    let info: Value = server.get("/info").await.unwrap().json().unwrap();
    let names: Vec<&str> = info["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http"], "{info}");
    server.shutdown().await.unwrap();

    let named = service().with_consumers(patron_tests::registered("never_started"));
    let server = TestServer::start(named).await.unwrap();
    let component = patron_tests::info_component(server.base_url(), "never_started").await;
    assert_eq!(component["kind"], "amqp-consumer");
    server.shutdown().await.unwrap();
}
