use patron::prelude::*;

#[patron::consumer(sqs = "orders", prefetch = 10)]
async fn on_order(_msg: Message<String>) {}

fn main() {}
