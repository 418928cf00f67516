use patron::prelude::*;

#[patron::consumer(amqp = "orders", batch_timeout = "1s")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
