//! Producer → consumer round trips for the client tests: a patron route
//! sends with the caller's trace context and correlation id, a patron
//! consumer records what arrived, and the test checks both carried over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use patron::consumer::{Message, MessageHandler, handler_fn};
use patron::prelude::Json;
use serde_json::Value;

/// The trace id every round trip sends in its `traceparent`.
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// One message a consumer received.
#[derive(Clone, Debug)]
pub struct Arrival {
    /// The JSON payload.
    pub payload: Value,
    /// Its `traceparent` header or attribute.
    pub traceparent: Option<String>,
    /// Its correlation id.
    pub correlation_id: String,
}

/// Every message the consumer made by [`handler`](Self::handler) received.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<Arrival>>>);

impl Received {
    /// A handler of JSON messages that records each one.
    pub fn handler(&self) -> impl MessageHandler {
        let sink = self.0.clone();
        handler_fn(move |msg: Message<Json<Value>>| {
            let sink = sink.clone();
            async move {
                let traceparent = msg.headers().get("traceparent").map(str::to_string);
                let correlation_id = msg.correlation_id().to_string();
                sink.lock().unwrap().push(Arrival {
                    payload: msg.into_payload().0,
                    traceparent,
                    correlation_id,
                });
                Ok::<_, patron::Error>(())
            }
        })
    }

    /// The first message, waiting up to `wait` for it.
    pub async fn first(&self, wait: Duration) -> Arrival {
        assert!(
            crate::eventually(wait, || async { !self.0.lock().unwrap().is_empty() }).await,
            "nothing arrived within {wait:?}"
        );
        self.0.lock().unwrap()[0].clone()
    }
}

/// POSTs `body` as JSON to `url` with [`TRACE_ID`] in `traceparent` and
/// `correlation_id` in `X-Correlation-Id`.
pub async fn post(url: &str, correlation_id: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .header("x-correlation-id", correlation_id)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// `arrival` is `payload` with [`TRACE_ID`] and `correlation_id`.
pub fn assert_carried(arrival: &Arrival, payload: &Value, correlation_id: &str) {
    assert_eq!(&arrival.payload, payload);
    let traceparent = arrival.traceparent.as_deref().expect("a traceparent");
    assert_eq!(
        traceparent.split('-').nth(1),
        Some(TRACE_ID),
        "{traceparent}"
    );
    assert_eq!(arrival.correlation_id, correlation_id);
}
