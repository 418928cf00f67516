use patron::prelude::*;

#[patron::consumer(kafka = "orders", group = "g", prefetch = 10)]
async fn on_order(_msg: Message<String>) {}

fn main() {}
