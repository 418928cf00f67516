use patron::prelude::*;

#[patron::consumer(kafka = "orders")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
