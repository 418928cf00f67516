use patron::prelude::*;

#[patron::consumer(sqs = "orders", max_messages = 11)]
async fn on_order(_msg: Message<String>) {}

fn main() {}
