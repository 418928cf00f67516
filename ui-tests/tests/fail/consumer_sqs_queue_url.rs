use patron::prelude::*;

#[patron::consumer(sqs = "https://sqs.us-east-1.amazonaws.com/123/orders")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
