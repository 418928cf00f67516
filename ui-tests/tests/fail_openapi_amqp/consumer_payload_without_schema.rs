// With the `openapi` feature, a consumer's JSON payload type without a JSON
// schema is an error on the message type; `openapi = false` leaves the
// payload out of the AsyncAPI document instead.
use patron::prelude::*;

#[derive(Deserialize)]
struct Order {
    id: u64,
}

#[patron::consumer(amqp = "orders")]
async fn on_order(msg: Message<Json<Order>>) -> Result<(), patron::Error> {
    let _ = msg.id;
    Ok(())
}

#[patron::consumer(amqp = "orders.audit", openapi = false)]
async fn audit(msg: Message<Json<Order>>) -> Result<(), patron::Error> {
    let _ = msg.id;
    Ok(())
}

fn main() {}
