use patron::prelude::*;

#[patron::consumer(sqs = "orders", wait = "30s")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
