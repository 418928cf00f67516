use patron::prelude::*;

#[patron::consumer(amqp = "orders", max_deliveries = -1)]
async fn on_order(_msg: Message<String>) {}

#[patron::consumer(amqp = "payments", max_deliveries = "ten")]
async fn on_payment(_msg: Message<String>) {}

fn main() {}
