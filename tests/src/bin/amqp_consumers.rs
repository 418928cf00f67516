//! A service with attribute consumers, run as a child process by the AMQP
//! tests: stop/restart without loss, and trace context from headers.

use std::time::Duration;

use patron::prelude::*;

#[derive(Deserialize, schemars::JsonSchema)]
struct Item {
    id: u32,
}

/// Logs each id; a short pause keeps the stream long enough to stop it
/// midway.
#[patron::consumer(
    amqp = "patron-test-stop",
    declare = true,
    prefetch = 20,
    concurrency = 4
)]
async fn stop_consumer(msg: Message<Json<Item>>) -> Result<(), patron::Error> {
    tokio::time::sleep(Duration::from_millis(2)).await;
    tracing::info!(id = msg.id, "processed");
    Ok(())
}

/// Logs one line inside the message span.
#[patron::consumer(amqp = "patron-test-trace", declare = true)]
async fn trace_consumer(msg: Message<String>) {
    tracing::info!(body = %msg.payload(), "traced message");
}

#[patron::main]
async fn main() {}
