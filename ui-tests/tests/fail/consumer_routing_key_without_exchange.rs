use patron::prelude::*;

#[patron::consumer(amqp = "orders", routing_key = "orders.*")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
