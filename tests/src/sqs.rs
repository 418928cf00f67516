//! SQS helpers for tests: a client for the SQS-compatible server from
//! `PATRON_TEST_SQS_ENDPOINT` (explicit dummy credentials, region
//! us-east-1, so the SDK never looks for instance metadata), fresh queues,
//! sending with attributes and reading queue depth.

use std::collections::BTreeMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};

/// The endpoint, or `None` (test skipped) when `PATRON_TEST_SQS_ENDPOINT`
/// is unset and services are not required.
pub fn endpoint() -> Option<String> {
    crate::service("PATRON_TEST_SQS_ENDPOINT", "an SQS-compatible server")
}

/// A client for `endpoint` with dummy credentials.
pub fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "patron-tests"))
        .build();
    Client::from_conf(conf)
}

/// Creates `name` (and returns its URL).
pub async fn create(client: &Client, name: &str) -> String {
    client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue URL")
}

/// Deletes the queue at `url`.
pub async fn delete(client: &Client, url: &str) {
    let _ = client.delete_queue().queue_url(url).send().await;
}

/// Sends `body` with string attributes.
pub async fn send(client: &Client, url: &str, body: &str, attributes: &[(&str, &str)]) {
    let mut req = client.send_message().queue_url(url).message_body(body);
    for (k, v) in attributes {
        req = req.message_attributes(
            *k,
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*v)
                .build()
                .expect("attribute"),
        );
    }
    req.send().await.expect("send message");
}

/// (visible, in flight) messages in the queue at `url`.
pub async fn depth(client: &Client, url: &str) -> (u64, u64) {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |n: QueueAttributeName| attrs.get(&n).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Receives one message from `url` and deletes it: body and string attributes.
pub async fn take(client: &Client, url: &str) -> Option<(String, BTreeMap<String, String>)> {
    let out = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(1)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let m = out.messages?.into_iter().next()?;
    let attrs = m
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
        .collect();
    if let Some(r) = &m.receipt_handle {
        let _ = client
            .delete_message()
            .queue_url(url)
            .receipt_handle(r)
            .send()
            .await;
    }
    Some((m.body.unwrap_or_default(), attrs))
}

/// One test's SQS set-up: a client, a queue of its own and, when asked, a
/// dead-letter queue named after it. `finish` deletes both.
pub struct Fixture {
    /// A client of the test server.
    pub client: Client,
    /// The consumed queue's name, `patron-test-{prefix}-…`.
    pub queue: String,
    /// Its URL.
    pub url: String,
    dlq: Option<(String, String)>,
}

impl Fixture {
    /// `None` (the test is skipped) without an SQS server; else a client and
    /// a new queue named after `prefix`.
    pub async fn new(prefix: &str) -> Option<Fixture> {
        let client = client(&endpoint()?);
        let queue = crate::unique(prefix);
        let url = create(&client, &queue).await;
        Some(Fixture {
            client,
            queue,
            url,
            dlq: None,
        })
    }

    /// Creates a dead-letter queue `{queue}{suffix}`.
    pub async fn with_dlq(mut self, suffix: &str) -> Fixture {
        let dlq = format!("{}{suffix}", self.queue);
        let url = create(&self.client, &dlq).await;
        self.dlq = Some((dlq, url));
        self
    }

    /// The dead-letter queue's name and URL.
    pub fn dlq(&self) -> (String, String) {
        self.dlq.clone().expect("Fixture::with_dlq creates the DLQ")
    }

    /// Runs `consumer`, given this fixture's client, alone in a test service
    /// with a 5-second shutdown timeout.
    pub async fn serve(
        &self,
        consumer: patron::consumer::sqs::SqsConsumer,
    ) -> patron::test::TestServer {
        crate::serve_consumer(
            "sqs-test",
            consumer.client(self.client.clone()),
            std::time::Duration::from_secs(5),
        )
        .await
    }

    /// Deletes the queues.
    pub async fn finish(self) {
        delete(&self.client, &self.url).await;
        if let Some((_, url)) = &self.dlq {
            delete(&self.client, url).await;
        }
    }
}
