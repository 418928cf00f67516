use patron::prelude::*;

#[patron::consumer(amqp = "orders", backoff = "soon")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
