use patron::prelude::*;

#[patron::consumer(retries = 3, amqp = "orders")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
