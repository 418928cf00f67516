/// An event on the Kafka topic `events`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Event {
    id: u64,
}

/// Handles each event in the consumer group `{{name}}`; a failure is retried
/// 3 times, then sent to `events.dlq`. Offsets are committed after handling.
#[patron::consumer(kafka = "events", group = "{{name}}", retries = 3, dlq = "events.dlq")]
async fn on_event(msg: Message<Json<Event>>) -> Result<(), patron::Error> {
    tracing::info!(id = msg.id, "event handled");
    Ok(())
}
