/// A job on the SQS queue `jobs`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Job {
    id: u64,
}

/// Handles each job; a failure is retried 3 times, then sent to `jobs-dlq`.
/// The message is deleted after this returns.
#[patron::consumer(sqs = "jobs", retries = 3)]
async fn on_job(msg: Message<Json<Job>>) -> Result<(), patron::Error> {
    tracing::info!(id = msg.id, "job done");
    Ok(())
}
