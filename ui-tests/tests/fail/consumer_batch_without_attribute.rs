use patron::prelude::*;

#[patron::consumer(amqp = "orders")]
async fn on_orders(_batch: Batch<String>) {}

fn main() {}
