use patron::prelude::*;

#[patron::consumer(sqs = "orders", visibility = "1500ms")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
