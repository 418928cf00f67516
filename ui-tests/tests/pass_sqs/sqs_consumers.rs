use patron::prelude::*;

#[derive(Deserialize, schemars::JsonSchema)]
struct Invoice {
    id: u64,
}

struct Books;

#[patron::consumer(
    sqs = "invoices",
    wait = "10s",
    max_messages = 5,
    visibility = "2m",
    concurrency = 8,
    retries = 2,
    backoff = "1s",
    dlq = "invoices-dlq",
)]
async fn on_invoice(msg: Message<Json<Invoice>>, books: Dep<Books>) -> Result<(), patron::Error> {
    let _ = (&*books, msg.id);
    Ok(())
}

#[patron::consumer(sqs = "events.fifo", on_failure = requeue)]
async fn on_event(msg: Message<String>) {
    let _ = msg.payload();
}

fn main() {}
