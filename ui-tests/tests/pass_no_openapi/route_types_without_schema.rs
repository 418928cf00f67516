// Without the `openapi` feature, handler types need no JSON schema: the
// same code as `fail_openapi/route_types_without_schema.rs` compiles.
use patron::prelude::*;

#[derive(Deserialize)]
struct Order {
    item: String,
}

#[derive(Deserialize)]
struct Page {
    limit: u32,
}

#[derive(Serialize)]
struct Accepted {
    id: u64,
}

#[patron::route(POST "/orders")]
async fn place(Json(order): Json<Order>) -> Result<Json<Accepted>, patron::Error> {
    Ok(Json(Accepted { id: order.item.len() as u64 }))
}

#[patron::route(GET "/orders")]
async fn list(Query(page): Query<Page>) -> String {
    format!("{}", page.limit)
}

#[patron::route(PUT "/orders", openapi = false)]
async fn replace(Json(order): Json<Order>) -> Json<Accepted> {
    Json(Accepted { id: order.item.len() as u64 })
}

fn main() {}
