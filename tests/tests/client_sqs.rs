//! `patron::client::sqs::SqsSender` against the SQS-compatible server
//! (`PATRON_TEST_SQS_ENDPOINT`): a patron route sends, a patron consumer
//! receives the caller's trace and correlation id; batches of any size go
//! out ten per call, reported by index, refused entries too; limits are
//! checked before any network I/O; an unknown queue is a clear error.

use std::time::Duration;

use patron::client::sqs::{SqsError, SqsMessage, SqsSender};
use patron::consumer::sqs::SqsConsumer;
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::roundtrip::{Received, assert_carried, post};
use patron_tests::sqs::{self, endpoint};
use patron_tests::{eventually, prom};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

use patron_tests::unique;

/// The queue the `/send` route sends to.
struct Queue(String);

#[patron::route(POST "/send")]
async fn send(
    sqs: Dep<SqsSender>,
    queue: Dep<Queue>,
    Json(body): Json<Value>,
) -> Result<String, patron::Error> {
    Ok(sqs.send(&queue.0, &SqsMessage::json(&body)?).await?)
}

fn sends(queue: &str, outcome: &str) -> f64 {
    prom::global(
        "sqs_send_duration_seconds_count",
        &[("queue", queue), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_sends_and_the_consumer_sees_its_trace_and_correlation_id() {
    let Some(endpoint) = endpoint() else { return };
    let client = sqs::client(&endpoint);
    let queue = unique("sender");
    let url = sqs::create(&client, &queue).await;
    let received = Received::default();
    let consumer = SqsConsumer::new(&queue, received.handler())
        .client(client.clone())
        .wait(Duration::from_secs(1));
    let service = Service::new("sqs-sender-test")
        .with_consumers(std::iter::empty())
        .with_component(consumer)
        .with_client(SqsSender::new(client.clone()))
        .provide(Queue(queue.clone()));
    let server = TestServer::start(service).await.unwrap();

    let resp = post(
        &server.url("/send"),
        "corr-sqs-sender",
        &json!({ "invoice": 3 }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.text().await.unwrap().is_empty(), "a message id");
    assert_carried(
        &received.first(WAIT).await,
        &json!({ "invoice": 3 }),
        "corr-sqs-sender",
    );
    assert_eq!(sends(&queue, "ok"), 1.0);
    server.shutdown().await.unwrap();
    sqs::delete(&client, &url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_any_size_goes_out_ten_per_call_in_order_of_index() {
    let Some(endpoint) = endpoint() else { return };
    let client = sqs::client(&endpoint);
    let queue = unique("batch");
    let url = sqs::create(&client, &queue).await;
    let sender = SqsSender::new(client.clone());

    let messages: Vec<SqsMessage> = (0..25)
        .map(|i| SqsMessage::new(format!("m{i}")).attribute("n", i.to_string()))
        .collect();
    let sent = sender.send_batch(&queue, &messages).await.unwrap();
    assert!(sent.failed.is_empty(), "{sent:?}");
    let indices: Vec<usize> = sent.sent.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..25).collect::<Vec<_>>());
    assert!(eventually(WAIT, || async { sqs::depth(&client, &url).await.0 == 25 }).await);
    let (body, attributes) = sqs::take(&client, &url).await.unwrap();
    assert_eq!(attributes["n"], &body[1..], "attributes travel per message");

    // By URL too: no lookup needed.
    sender.send(&url, &SqsMessage::new("by url")).await.unwrap();
    assert!(eventually(WAIT, || async { sqs::depth(&client, &url).await.0 == 25 }).await);
    sqs::delete(&client, &url).await;
}

/// An SQS peer that refuses every batch entry whose body starts with
/// `bad`, as SQS does for entries it cannot take (moto validates a whole
/// batch up front, so it cannot be made to refuse just one).
async fn refusing_peer() -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/",
        post(|headers: http::HeaderMap, body: String| async move {
            assert_eq!(headers["x-amz-target"], "AmazonSQS.SendMessageBatch");
            let request: Value = serde_json::from_str(&body).unwrap();
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            for entry in request["Entries"].as_array().unwrap() {
                let id = entry["Id"].clone();
                if entry["MessageBody"].as_str().unwrap().starts_with("bad") {
                    failed.push(json!({ "Id": id, "SenderFault": true,
                        "Code": "InvalidMessageContents", "Message": "not this one" }));
                } else {
                    ok.push(
                        json!({ "Id": id, "MessageId": format!("m{}", id.as_str().unwrap()),
                        "MD5OfMessageBody": "unused" }),
                    );
                }
            }
            (
                [("content-type", "application/x-amz-json-1.0")],
                json!({ "Successful": ok, "Failed": failed }).to_string(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_batch_entry_is_reported_by_index_and_the_others_are_sent() {
    let peer = refusing_peer().await;
    let sender = SqsSender::new(sqs::client(&peer));
    let queue = format!("{peer}/000000000000/refusing");
    let before = sends(&queue, "partial");
    let batch: Vec<SqsMessage> = (0..12)
        .map(|i| {
            SqsMessage::new(if i == 3 || i == 11 {
                format!("bad {i}")
            } else {
                format!("ok {i}")
            })
        })
        .collect();
    let sent = sender.send_batch(&queue, &batch).await.unwrap();
    let indices: Vec<usize> = sent.sent.iter().map(|(i, _)| *i).collect();
    let expected: Vec<usize> = (0..12).filter(|i| *i != 3 && *i != 11).collect();
    assert_eq!(indices, expected, "{sent:?}");
    assert_eq!(sent.sent[0].1, "m0");
    let failed: Vec<usize> = sent.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, [3, 11], "indices across the two calls: {sent:?}");
    assert!(sent.failed[0].sender_fault);
    assert_eq!(sent.failed[0].code, "InvalidMessageContents");
    assert_eq!(sent.failed[0].reason, "not this one");
    assert_eq!(sends(&queue, "partial"), before + 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_are_checked_before_sending_and_an_unknown_queue_is_named() {
    let Some(endpoint) = endpoint() else { return };
    let sender = SqsSender::new(sqs::client(&endpoint));

    let crowded = (0..11).fold(SqsMessage::new("x"), |m, i| {
        m.attribute(format!("a{i}"), "v")
    });
    let err = sender.send("anywhere", &crowded).await.unwrap_err();
    assert!(matches!(err, SqsError::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("SQS queue anywhere: 11 message attributes"),
        "{err}"
    );
    let late = SqsMessage::new("x").delay(Duration::from_secs(901));
    let err = sender
        .send_batch("anywhere", &[SqsMessage::new("fine"), late])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("longer than SQS's 15 minutes"),
        "{err}"
    );

    let missing = unique("missing");
    let err = sender
        .send(&missing, &SqsMessage::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, SqsError::Resolve { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("SQS queue {missing}: cannot resolve its URL")),
        "{err}"
    );
    assert_eq!(sends(&missing, "error"), 1.0);
}

/// Issue 17 item 9: an SQS sender that cannot reach SQS shows on `/ready`
/// naming itself; one that can is ready.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_sender_fails_readiness() {
    let down = format!("http://127.0.0.1:{}", patron_tests::free_port());
    let server = TestServer::start(
        Service::new("sqs-sender-ready-test")
            .with_consumers(std::iter::empty())
            .with_client(SqsSender::new(sqs::client(&down)))
            .provide(Queue(String::new())),
    )
    .await
    .unwrap();
    let ready = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("sqs sender"), "{body}");
    server.shutdown().await.unwrap();

    let Some(endpoint) = endpoint() else { return };
    let server = TestServer::start(
        Service::new("sqs-sender-ready-test")
            .with_consumers(std::iter::empty())
            .with_client(SqsSender::new(sqs::client(&endpoint)))
            .provide(Queue(String::new())),
    )
    .await
    .unwrap();
    let ready = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    server.shutdown().await.unwrap();
}
