use patron::prelude::*;

#[patron::consumer(amqp = "orders", batch = 10)]
async fn on_orders(_msg: Message<String>) {}

fn main() {}
