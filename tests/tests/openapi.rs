//! `/openapi.json` (feature `openapi`) against an independent checker:
//! `openapi-spec-validator` (PyPI, installed by `scripts/services`, found
//! through `PATRON_TEST_OPENAPI_VALIDATOR`) accepts the document of routes
//! with path parameters, a wildcard, authentication and a rate limit.

use patron::prelude::*;
use patron::test::TestServer;

#[patron::route(GET "/catalog/{shelf}/items/{id}")]
async fn item(Path((shelf, id)): Path<(String, u64)>) -> String {
    format!("{shelf}/{id}")
}

#[patron::route(POST "/catalog/items", auth = ApiKey, rate_limit = "50/s")]
async fn add_item(body: String) -> String {
    body
}

#[patron::route(GET "/catalog/files/{*path}")]
async fn catalog_file(Path(path): Path<String>) -> String {
    path
}

fn service() -> Service {
    Service::new("catalog").provide(ApiKey::new(["test-key"]))
}

#[tokio::test]
async fn the_document_describes_the_routes_and_passes_the_validator() -> patron::Result<()> {
    let server = TestServer::start(service()).await?;
    let response = server.get("/openapi.json").await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = response.json()?;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "catalog");
    let item = &doc["paths"]["/catalog/{shelf}/items/{id}"]["get"];
    assert_eq!(item["parameters"].as_array().map(Vec::len), Some(2));
    let add = &doc["paths"]["/catalog/items"]["post"];
    assert_eq!(add["security"], serde_json::json!([{ "ApiKey": [] }]));
    assert!(add["responses"].get("429").is_some() && add["responses"].get("401").is_some());
    assert!(doc["paths"].get("/catalog/files/{path}").is_some());
    // The built-in endpoints are not the service's API.
    assert!(doc["paths"].get("/openapi.json").is_none() && doc["paths"].get("/ready").is_none());

    if let Some(validator) =
        patron_tests::service("PATRON_TEST_OPENAPI_VALIDATOR", "openapi-spec-validator")
    {
        let file = std::env::temp_dir().join(format!("patron-openapi-{}.json", std::process::id()));
        std::fs::write(&file, response.bytes()).expect("write the document");
        let out = std::process::Command::new(validator)
            .arg(&file)
            .output()
            .expect("run openapi-spec-validator");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "openapi-spec-validator refused it:\n{said}"
        );
        assert!(said.contains("OK"), "{said}");
    }
    server.shutdown().await
}

#[tokio::test]
async fn the_document_can_be_turned_off() -> patron::Result<()> {
    let mut service = service();
    service.config_mut().http_openapi = false;
    let server = TestServer::start(service).await?;
    assert_eq!(
        server.get("/openapi.json").await?.status(),
        StatusCode::NOT_FOUND
    );
    server.shutdown().await
}
