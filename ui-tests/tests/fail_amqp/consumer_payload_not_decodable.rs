use patron::prelude::*;

struct Order;

#[patron::consumer(amqp = "orders")]
async fn on_order(_msg: Message<Order>) {}

fn main() {}
