use patron::prelude::*;

#[derive(Deserialize, schemars::JsonSchema)]
struct Order {
    item: String,
    quantity: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
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
        let order = |quantity| NewOrder {
            item: "tea",
            quantity,
        };

        let hello = server.get("/hello/ada").await?;
        assert_eq!(hello.text(), "hello, ada");
        let accepted = server
            .post_json("/orders", &order(2))
            .api_key("test-key")
            .await?;
        assert_eq!(accepted.status(), StatusCode::OK);
        let body: super::Accepted = accepted.json()?;
        assert_eq!((body.item.as_str(), body.quantity), ("tea", 2));
        let refused = server
            .post_json("/orders", &order(2))
            .api_key("wrong-key")
            .await?;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let invalid = server
            .post_json("/orders", &order(0))
            .api_key("test-key")
            .await?;
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let contract = server.get("/openapi.json").await?.text();
        assert!(contract.contains(r##"{"$ref":"#/components/schemas/Order"}"##));

        server.shutdown().await // graceful, as on SIGTERM
    }
}
