use patron::prelude::*;

#[patron::consumer(amqp = "orders", prefetch = 0)]
async fn on_order(_msg: Message<String>) {}

fn main() {}
