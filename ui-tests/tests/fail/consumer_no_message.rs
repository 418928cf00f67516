#[patron::consumer(amqp = "orders")]
async fn on_order() {}

fn main() {}
