use patron::prelude::*;

#[patron::consumer(kafka = "orders", group = "g", on_failure = drop)]
async fn on_order(_msg: Message<String>) {}

fn main() {}
