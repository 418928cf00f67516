use patron::prelude::*;

// An unknown key lists only the keys an SQS consumer takes.
#[patron::consumer(sqs = "orders", visibilty = "30s")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
