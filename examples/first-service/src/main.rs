use patron::prelude::*;

#[derive(Deserialize)]
struct Order {
    item: String,
    quantity: u32,
}

#[derive(Serialize)]
struct Accepted {
    item: String,
    quantity: u32,
    correlation_id: String,
}

#[patron::route(GET "/hello/{name}")]
async fn hello(Path(name): Path<String>) -> String {
    tracing::info!(%name, "greeted"); // the log line carries the correlation id
    format!("hello, {name}")
}

#[patron::route(POST "/orders", auth = ApiKey, timeout = "2s")]
async fn order(
    id: CorrelationId,
    Json(order): Json<Order>,
) -> Result<Json<Accepted>, patron::Error> {
    if order.quantity == 0 {
        return Err(patron::Error::unprocessable("quantity must be at least 1"));
    }
    Ok(Json(Accepted {
        item: order.item,
        quantity: order.quantity,
        correlation_id: id.as_str().to_owned(),
    }))
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    Ok(service.provide(ApiKey::from_env("PATRON_API_KEYS")?))
}

#[cfg(test)]
mod tests {
    use patron::prelude::*;
    use patron::test::TestServer;

    #[derive(Serialize)]
    struct NewOrder {
        item: &'static str,
        quantity: u32,
    }

    #[tokio::test]
    async fn orders_need_a_key_and_a_quantity() -> patron::Result<()> {
        let service = Service::new("first-service").provide(ApiKey::new(["test-key"]));
        let server = TestServer::start(service).await?;
        let http = reqwest::Client::new();
        let post = |key: &str, quantity: u32| {
            http.post(server.url("/orders"))
                .header("Authorization", format!("Apikey {key}"))
                .json(&NewOrder {
                    item: "tea",
                    quantity,
                })
                .send()
        };

        let hello = reqwest::get(server.url("/hello/ada"))
            .await
            .expect("GET /hello");
        assert_eq!(hello.text().await.expect("body"), "hello, ada");
        assert_eq!(post("test-key", 2).await.expect("POST").status(), 200);
        assert_eq!(post("wrong-key", 2).await.expect("POST").status(), 401);
        assert_eq!(post("test-key", 0).await.expect("POST").status(), 422);

        server.shutdown().await // graceful, as on SIGTERM
    }
}
