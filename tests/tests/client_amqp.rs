//! `patron::client::amqp::AmqpPublisher` against the real RabbitMQ
//! (`PATRON_TEST_AMQP_URL`): a patron route publishes, a patron consumer
//! receives the caller's trace and correlation id; an unroutable message is
//! an error, not a silent drop; a channel the broker closed is reopened;
//! an unreachable broker is a clear error and a 503 on `/ready`.

use std::time::Duration;

use patron::client::amqp::{AmqpPublisher, PublishError, Publishing};
use patron::config::BrokerUrl;
use patron::consumer::amqp::AmqpConsumer;
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::amqp::{Broker, unique, url};
use patron_tests::roundtrip::{Received, assert_carried, post};
use patron_tests::{eventually, free_port, prom};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// The queue the `/publish` route publishes to.
struct Queue(String);

#[patron::route(POST "/publish")]
async fn publish(
    mq: Dep<AmqpPublisher>,
    queue: Dep<Queue>,
    Json(body): Json<Value>,
) -> Result<StatusCode, patron::Error> {
    mq.publish(&Publishing::json("", queue.0.as_str(), &body)?)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

fn publishes(exchange: &str, outcome: &str) -> f64 {
    prom::global(
        "amqp_publish_duration_seconds_count",
        &[("exchange", exchange), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_publishes_and_the_consumer_sees_its_trace_and_correlation_id() {
    let Some(url) = url() else { return };
    let broker = Broker::connect(&url).await;
    let queue = unique("publisher");
    broker.fresh_queue(&queue).await;
    let received = Received::default();
    let consumer = AmqpConsumer::new(&queue, received.handler()).url(&url);
    let confirmed_before = publishes("", "confirmed");
    let service = Service::new("amqp-publisher-test")
        .with_consumers(std::iter::empty())
        .with_component(consumer)
        .with_client(AmqpPublisher::new(BrokerUrl::new(&url)))
        .provide(Queue(queue.clone()));
    let server = TestServer::start(service).await.unwrap();

    let resp = post(
        &server.url("/publish"),
        "corr-amqp-publisher",
        &json!({ "order": 9 }),
    )
    .await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    assert_carried(
        &received.first(WAIT).await,
        &json!({ "order": 9 }),
        "corr-amqp-publisher",
    );
    assert!(publishes("", "confirmed") >= confirmed_before + 1.0);

    let ready: Value = reqwest::get(server.url("/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "amqp publisher" && c["status"] == "ok"),
        "{ready}"
    );
    server.shutdown().await.unwrap();
    broker.delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unroutable_message_is_an_error_and_a_closed_channel_is_reopened() {
    let Some(url) = url() else { return };
    let publisher = AmqpPublisher::connect(BrokerUrl::new(&url)).await.unwrap();
    let nowhere = unique("no-such-queue");
    let unroutable_before = publishes("", "unroutable");
    let err = publisher
        .publish(&Publishing::to_queue(&nowhere, "lost?"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Unroutable { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("AMQP publish to queue {nowhere:?}: unroutable")),
        "{text}"
    );
    assert!(text.contains("NO_ROUTE"), "{text}");
    assert_eq!(publishes("", "unroutable"), unroutable_before + 1.0);

    // Publishing to a missing exchange makes the broker close the channel.
    let missing = unique("no-such-exchange");
    let err = publisher
        .publish(&Publishing::new(&missing, "k", "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Publish { .. }), "{err}");
    assert!(err.to_string().contains(&missing), "{err}");

    // The next publish opens a new channel and is confirmed.
    let broker = Broker::connect(&url).await;
    let queue = unique("reopened");
    broker.fresh_queue(&queue).await;
    publisher
        .publish(&Publishing::to_queue(&queue, "after").header("h", "v"))
        .await
        .unwrap();
    assert!(eventually(WAIT, || async { broker.depth(&queue).await == 1 }).await);
    broker.delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_a_clear_error_and_ready_is_503() {
    let closed = BrokerUrl::new(format!(
        "amqp://guest:hunter2@127.0.0.1:{}/%2f",
        free_port()
    ));
    let err = AmqpPublisher::connect(closed.clone()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("RabbitMQ at amqp://guest:***@127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let malformed = BrokerUrl::new("amqp://guest:hunter2@127.0.0.1/%2f?heartbeat=soon");
    let text = AmqpPublisher::connect(malformed)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        "RabbitMQ at amqp://guest:***@127.0.0.1/%2f?heartbeat=soon: invalid URL: invalid digit found in string"
    );

    let server = TestServer::start(
        Service::new("amqp-publisher-down")
            .with_consumers(std::iter::empty())
            .with_client(AmqpPublisher::new(closed))
            .provide(Queue(String::new())),
    )
    .await
    .unwrap();
    let resp = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("amqp publisher"),
        "{body}"
    );
    assert!(!body.to_string().contains("hunter2"), "{body}");
    server.shutdown().await.unwrap();

    let err =
        Publishing::json("", "q", &std::collections::HashMap::from([((1, 2), 3)])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("AMQP publish to queue \"q\": cannot encode the message as JSON"),
        "{err}"
    );
}
