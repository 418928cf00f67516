use patron::prelude::*;

#[patron::consumer]
async fn on_order(_msg: Message<String>) {}

fn main() {}
