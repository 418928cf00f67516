/// A task on the RabbitMQ queue `tasks`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Task {
    id: u64,
}

/// Handles each task; a failure is retried 3 times, then dead-lettered to
/// `tasks.dlq`. At-least-once: the message is acknowledged after this returns.
#[patron::consumer(amqp = "tasks", declare = true, retries = 3, dlq = "tasks.dlq")]
async fn on_task(msg: Message<Json<Task>>) -> Result<(), patron::Error> {
    tracing::info!(id = msg.id, "task done");
    Ok(())
}
