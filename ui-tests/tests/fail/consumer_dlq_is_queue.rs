use patron::prelude::*;

#[patron::consumer(amqp = "orders", dlq = "orders")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
