use patron::prelude::*;

#[patron::consumer(kafka = "orders/eu", group = "g")]
async fn on_order(_msg: Message<String>) {}

fn main() {}
