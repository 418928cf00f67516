use patron::prelude::*;

#[patron::consumer(amqp = "orders")]
async fn on_order(_msg: Message<String>, _count: u32) {}

fn main() {}
