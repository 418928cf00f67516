use patron::prelude::*;

#[patron::consumer(amqp = "orders")]
async fn on_order(_msg: Message<String>) -> u32 {
    7
}

fn main() {}
