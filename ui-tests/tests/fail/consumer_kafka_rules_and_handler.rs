use patron::prelude::*;

// Rules between keys and handler mistakes come together.
#[patron::consumer(kafka = "orders", dedup_by_key = true, batch_timeout = "1s")]
async fn on_order<T>(_msg: Message<String>, _again: Message<String>) {}

fn main() {}
