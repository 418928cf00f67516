use patron::prelude::*;

#[patron::consumer(amqp = "orders")]
async fn on_order(_msg: Message<String>) {
    let counter = std::rc::Rc::new(1);
    tokio::task::yield_now().await;
    drop(counter);
}

fn main() {}
