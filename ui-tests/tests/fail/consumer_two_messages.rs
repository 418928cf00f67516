use patron::prelude::*;

#[patron::consumer(amqp = "orders")]
async fn on_order(_a: Message<String>, _b: Message<String>) {}

fn main() {}
