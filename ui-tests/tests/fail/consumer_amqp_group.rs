use patron::prelude::*;

#[patron::consumer(amqp = "orders", group = "g")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
