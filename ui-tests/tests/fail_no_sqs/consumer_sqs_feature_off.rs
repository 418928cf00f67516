use patron::prelude::*;

#[patron::consumer(sqs = "orders")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
