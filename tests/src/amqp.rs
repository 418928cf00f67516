//! RabbitMQ helpers for tests: a broker connection from
//! `PATRON_TEST_AMQP_URL`, fresh queues, publishing with headers, queue
//! depth and reading dead-lettered messages.

use std::collections::BTreeMap;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The broker URL, or `None` (test skipped) when `PATRON_TEST_AMQP_URL` is
/// unset and services are not required.
pub fn url() -> Option<String> {
    crate::service("PATRON_TEST_AMQP_URL", "RabbitMQ")
}

pub use crate::unique;

/// A test's connection to the broker, with a confirm-mode channel.
pub struct Broker {
    conn: Connection,
    /// The channel tests publish and inspect on.
    pub channel: Channel,
}

impl Broker {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Broker {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = conn.create_channel().await.expect("open a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Broker { conn, channel }
    }

    /// Deletes `queue` if it exists and declares it again, durable and empty.
    pub async fn fresh_queue(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .expect("delete queue");
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
    }

    /// Deletes `queue`.
    pub async fn delete(&self, queue: &str) {
        let _ = self
            .channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }

    /// Publishes `body` to `queue` through the default exchange, with string
    /// headers, and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, body: &[u8], headers: &[(&str, &str)]) {
        self.publish_with(queue, body, headers, None).await
    }

    /// As [`publish`](Self::publish), with a content type.
    pub async fn publish_with(
        &self,
        queue: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        content_type: Option<&str>,
    ) {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(
                (*k).into(),
                AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
            );
        }
        let mut props = BasicProperties::default()
            .with_headers(table)
            .with_delivery_mode(2);
        if let Some(ct) = content_type {
            props = props.with_content_type(ct.into());
        }
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("publisher confirm");
        assert!(confirm.is_ack(), "the broker refused a test message");
    }

    /// Messages ready in `queue` (not counting unacknowledged ones); 0 when
    /// the queue does not exist yet. Uses a channel of its own, since a
    /// failed passive declare closes its channel.
    pub async fn depth(&self, queue: &str) -> u32 {
        let channel = self.conn.create_channel().await.expect("open a channel");
        let depth = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        let _ = channel.close(200, "done".into()).await;
        depth
    }

    /// Takes one message from `queue`: its body and headers as text.
    pub async fn get(&self, queue: &str) -> Option<(Vec<u8>, BTreeMap<String, String>)> {
        let got = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")?;
        let mut headers = BTreeMap::new();
        if let Some(table) = got.delivery.properties.headers() {
            for (k, v) in table.inner() {
                let text = match v {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    AMQPValue::LongLongInt(n) => n.to_string(),
                    other => format!("{other:?}"),
                };
                headers.insert(k.to_string(), text);
            }
        }
        got.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        Some((got.delivery.data.clone(), headers))
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

/// Closes the broker side of every client connection whose name contains
/// `name` (`rabbitmqctl close_connection`), as a broker restart or network
/// cut would, without touching other tests' connections. Returns how many
/// it closed.
pub fn close_connections_named(name: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "-q",
        ])
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl list_connections failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut closed = 0;
    for line in listing.lines().filter(|l| l.contains(name)) {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let status = std::process::Command::new("rabbitmqctl")
            .args([
                "close_connection",
                pid,
                "patron test: simulated connection loss",
            ])
            .status()
            .expect("run rabbitmqctl");
        assert!(
            status.success(),
            "rabbitmqctl close_connection {pid} failed"
        );
        closed += 1;
    }
    closed
}

/// One test's RabbitMQ set-up: a connection, a fresh queue of its own and,
/// when asked, a dead-letter queue named after it. `finish` deletes both.
pub struct Fixture {
    /// The broker URL from `PATRON_TEST_AMQP_URL`.
    pub url: String,
    /// The test's connection.
    pub broker: Broker,
    /// The consumed queue, `patron-test-{prefix}-…`, declared empty.
    pub queue: String,
    dlq: Option<String>,
}

impl Fixture {
    /// `None` (the test is skipped) without RabbitMQ; else a connection and
    /// an empty queue named after `prefix`.
    pub async fn new(prefix: &str) -> Option<Fixture> {
        let url = url()?;
        let broker = Broker::connect(&url).await;
        let queue = unique(prefix);
        broker.fresh_queue(&queue).await;
        Some(Fixture {
            url,
            broker,
            queue,
            dlq: None,
        })
    }

    /// Names a dead-letter queue `{queue}{suffix}`, left absent for the
    /// consumer to declare (or not).
    pub async fn with_dlq(mut self, suffix: &str) -> Fixture {
        let dlq = format!("{}{suffix}", self.queue);
        self.broker.delete(&dlq).await;
        self.dlq = Some(dlq);
        self
    }

    /// Declares a dead-letter queue `{queue}{suffix}`, durable and empty.
    pub async fn declared_dlq(mut self, suffix: &str) -> Fixture {
        let dlq = format!("{}{suffix}", self.queue);
        self.broker.fresh_queue(&dlq).await;
        self.dlq = Some(dlq);
        self
    }

    /// The dead-letter queue's name.
    pub fn dlq(&self) -> &str {
        self.dlq
            .as_deref()
            .expect("Fixture::with_dlq names the DLQ")
    }

    /// Runs `consumer`, pointed at this broker, alone in a test service with
    /// a 5-second shutdown timeout.
    pub async fn serve(
        &self,
        consumer: patron::consumer::amqp::AmqpConsumer,
    ) -> patron::test::TestServer {
        crate::serve_consumer("amqp-test", consumer.url(&self.url), CONSUMER_SHUTDOWN).await
    }

    /// Deletes the queues and closes the connection.
    pub async fn finish(self) {
        self.broker.delete(&self.queue).await;
        if let Some(dlq) = &self.dlq {
            self.broker.delete(dlq).await;
        }
        self.broker.close().await;
    }
}

const CONSUMER_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);
