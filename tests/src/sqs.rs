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
