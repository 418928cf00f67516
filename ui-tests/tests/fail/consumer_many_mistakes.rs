use patron::prelude::*;

// Every mistake is reported at once, each on its own token.
#[patron::consumer(amqp = "orders", retry = 3, prefetch = 0, routing_key = "orders.*", dlq = "orders")]
fn on_order(_msg: Message<String>) {}

fn main() {}
