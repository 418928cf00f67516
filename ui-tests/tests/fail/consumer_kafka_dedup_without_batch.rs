use patron::prelude::*;

#[patron::consumer(kafka = "balances", group = "g", dedup_by_key = true)]
async fn project(_msg: Message<String>) {}

fn main() {}
