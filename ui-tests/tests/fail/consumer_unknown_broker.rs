use patron::prelude::*;

#[patron::consumer(amqpp = "orders")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
