use patron::prelude::*;

#[patron::consumer(amqp = "orders", retries = 1, retries = 2)]
async fn on_order(_msg: Message<String>) {}

fn main() {}
