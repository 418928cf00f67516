use patron::prelude::*;

#[patron::consumer(sqs = "orders", batch = 10)]
async fn on_orders(_batch: Batch<String>) {}

fn main() {}
