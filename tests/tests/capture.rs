//! The producers' test mode: an `AmqpPublisher`, `KafkaProducer` and
//! `SqsSender` made with `capturing(&sent)` record what a handler sends —
//! with the correlation id patron propagates — instead of sending it, are
//! ready without a broker, and close cleanly.

use patron::client::amqp::{AmqpPublisher, Publishing};
use patron::client::capture::Sent;
use patron::client::kafka::{KafkaProducer, Record};
use patron::client::sqs::{SqsMessage, SqsSender};
use patron::prelude::*;
use patron::test::TestServer;

#[derive(Deserialize, Serialize, Debug, PartialEq)]
struct Paid {
    order: u64,
}

#[patron::route(POST "/orders/{id}/paid")]
async fn paid(
    Path(id): Path<u64>,
    mq: Dep<AmqpPublisher>,
    events: Dep<KafkaProducer>,
    sqs: Dep<SqsSender>,
) -> Result<StatusCode, patron::Error> {
    let paid = Paid { order: id };
    mq.publish(&Publishing::json("billing", "paid", &paid)?)
        .await?;
    events
        .send(&Record::json("payments", &paid)?.key(id.to_string()))
        .await?;
    sqs.send(
        "invoices",
        &SqsMessage::json(&paid)?.attribute("tenant", "acme"),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tokio::test]
async fn capturing_producers_record_what_handlers_send() {
    let sent = Sent::new();
    let service = Service::new("capture")
        .with_client(AmqpPublisher::capturing(&sent))
        .with_client(KafkaProducer::capturing(&sent).unwrap())
        .with_client(SqsSender::capturing(&sent));
    let server = TestServer::start(service).await.unwrap();
    let answer = server
        .post("/orders/7/paid")
        .correlation_id("corr-7")
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT, "{}", answer.text());

    let recorded = sent.messages();
    let systems: Vec<&str> = recorded.iter().map(|m| m.system).collect();
    assert_eq!(systems, ["rabbitmq", "kafka", "aws_sqs"]);
    for m in &recorded {
        assert_eq!(m.json::<Paid>().unwrap(), Paid { order: 7 }, "{m:?}");
        assert_eq!(
            m.headers.get("x-correlation-id").map(String::as_str),
            Some("corr-7"),
            "{m:?}"
        );
    }
    let amqp = &sent.to("billing")[0];
    assert_eq!(amqp.routing_key.as_deref(), Some("paid"));
    assert_eq!(amqp.content_type.as_deref(), Some("application/json"));
    let kafka = &sent.to("payments")[0];
    assert_eq!(kafka.key.as_deref(), Some(&b"7"[..]));
    assert_eq!(sent.to("invoices")[0].headers["tenant"], "acme");

    // Ready without any broker, and closed cleanly at shutdown.
    let ready = server.get("/ready").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "{}", ready.text());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_capturing_producer_still_checks_what_a_broker_would_refuse() {
    let sent = Sent::new();
    let sqs = SqsSender::capturing(&sent);
    let too_many = (0..11).fold(SqsMessage::new("x"), |m, i| {
        m.attribute(format!("a{i}"), "v")
    });
    let err = sqs
        .send("invoices", &too_many)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invoices"), "{err}");
    assert!(sent.is_empty(), "nothing recorded: {:?}", sent.messages());
}
