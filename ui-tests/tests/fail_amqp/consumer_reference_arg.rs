use patron::consumer::Message;

struct Store;

#[patron::consumer(amqp = "orders")]
async fn on_order(_msg: Message<String>, _store: &Store) {}

fn main() {}
