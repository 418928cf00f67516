use patron::prelude::*;

#[patron::consumer(amqp = "orders", on_failure = drop, dlq = "orders.dlq")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
