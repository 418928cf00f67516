use patron::prelude::*;

#[patron::consumer(amqp = "balances", batch = 10, dedup_by_key = true)]
async fn project(_batch: Batch<String>) {}

fn main() {}
