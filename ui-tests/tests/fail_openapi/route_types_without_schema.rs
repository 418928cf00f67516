// With the `openapi` feature, a body, query or response type without a
// JSON schema is an error on that type that names the fix.
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

// Left out of the document: no schema needed.
#[patron::route(PUT "/orders", openapi = false)]
async fn replace(Json(order): Json<Order>) -> Json<Accepted> {
    Json(Accepted { id: order.item.len() as u64 })
}

fn main() {}
