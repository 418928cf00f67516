use patron::prelude::*;

#[patron::consumer(amqp = "orders", prefech = 10)]
async fn on_order(_msg: Message<String>) {}

fn main() {}
