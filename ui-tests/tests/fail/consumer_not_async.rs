use patron::prelude::*;

#[patron::consumer(amqp = "orders")]
fn on_order(_msg: Message<String>) {}

fn main() {}
