use patron::prelude::*;

#[patron::consumer(amqp = "orders", wait = "5s")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
