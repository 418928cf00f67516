use patron::prelude::*;

#[patron::consumer(amqp = "orders", batch = 10)]
async fn on_orders(_batch: Batch<String>, _limit: usize) {}

fn main() {}
