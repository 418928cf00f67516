use patron::prelude::*;

#[patron::consumer(amqp = "orders", batch = 50, prefetch = 10)]
async fn on_orders(_batch: Batch<String>) {}

fn main() {}
