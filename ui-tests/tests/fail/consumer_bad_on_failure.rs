use patron::prelude::*;

#[patron::consumer(amqp = "orders", on_failure = skip)]
async fn on_order(_msg: Message<String>) {}

fn main() {}
