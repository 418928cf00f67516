//! `/openapi.json` and `/asyncapi.json` (feature `openapi`) against
//! independent checkers: `openapi-spec-validator` (PyPI) accepts the
//! document of routes with path parameters, a wildcard, authentication and
//! a rate limit; the AsyncAPI CLI (npm `@asyncapi/cli`) the document of a
//! RabbitMQ consumer; schemathesis (PyPI) runs the `hello` and `orders`
//! examples against their own documents. All are installed by
//! `scripts/services` and found through `PATRON_TEST_OPENAPI_VALIDATOR`,
//! `PATRON_TEST_ASYNCAPI` and `PATRON_TEST_SCHEMATHESIS`.

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

#[patron::consumer(
    amqp = "patron-test-asyncapi",
    declare = true,
    concurrency = 2,
    retries = 1
)]
async fn catalog_events(msg: Message<Json<serde_json::Value>>) -> patron::Result<()> {
    tracing::info!(event = %msg.0, "catalog event");
    Ok(())
}

/// Runs `tool` on `document` written to a file; the tool's output.
fn check_with(tool: &str, args: &[&str], document: &[u8]) -> String {
    let file = std::env::temp_dir().join(format!(
        "patron-contract-{}-{}.json",
        std::process::id(),
        unique_suffix()
    ));
    std::fs::write(&file, document).expect("write the document");
    let out = std::process::Command::new(tool)
        .args(args)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{tool} refused the document:\n{said}");
    said
}

fn unique_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
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
        let said = check_with(&validator, &[], response.bytes());
        assert!(said.contains("OK"), "{said}");
    }
    // No consumer runs here, so there is no AsyncAPI document.
    assert_eq!(
        server.get("/asyncapi.json").await?.status(),
        StatusCode::NOT_FOUND
    );
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

#[tokio::test]
async fn the_consumers_document_passes_the_asyncapi_cli() -> patron::Result<()> {
    let Some(url) = patron_tests::service("PATRON_TEST_AMQP_URL", "RabbitMQ") else {
        return Ok(());
    };
    let mut service = service().with_consumers(patron::registered_consumers());
    service.config_mut().amqp_url = patron::config::BrokerUrl::new(url);
    let server = TestServer::start(service).await?;
    let response = server.get("/asyncapi.json").await?;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: serde_json::Value = response.json()?;
    assert_eq!(doc["asyncapi"], "3.0.0");
    let channel = &doc["channels"]["patron-test-asyncapi"];
    assert_eq!(
        channel["bindings"]["amqp"]["queue"]["name"],
        "patron-test-asyncapi"
    );
    let op = &doc["operations"]["catalog_events"];
    assert_eq!(op["action"], "receive");
    assert_eq!(op["x-patron-concurrency"], 2);
    assert_eq!(op["x-patron-retries"], 1);
    if let Some(cli) = patron_tests::service("PATRON_TEST_ASYNCAPI", "the AsyncAPI CLI") {
        let said = check_with(
            &cli,
            &["validate", "--fail-severity", "warn"],
            response.bytes(),
        );
        assert!(said.contains("is valid"), "{said}");
    }
    server.shutdown().await
}

/// Runs an example with `PATRON_PRINT_CONTRACT=which` and `env`; the
/// document it prints.
fn printed(bin: &str, which: &str, env: &[(&str, String)]) -> Vec<u8> {
    let out = std::process::Command::new(bin)
        .env("PATRON_PRINT_CONTRACT", which)
        .env("PATRON_API_KEYS", "example-key")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {which}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An example binary, the environment it needs, and whether it runs
/// consumers.
type Example<'a> = (&'a str, &'a [(&'a str, String)], bool);

/// Every example the suite builds prints an OpenAPI document the validator
/// accepts, and each one with consumers an AsyncAPI document the AsyncAPI
/// CLI accepts (`PATRON_PRINT_CONTRACT`, what `patron openapi --bin` uses).
#[test]
fn the_examples_documents_pass_the_validators() {
    let validator =
        patron_tests::service("PATRON_TEST_OPENAPI_VALIDATOR", "openapi-spec-validator");
    let asyncapi = patron_tests::service("PATRON_TEST_ASYNCAPI", "the AsyncAPI CLI");
    // The ledger connects to its database at start-up.
    let Some(database) = patron_tests::service("PATRON_TEST_DATABASE_URL", "PostgreSQL") else {
        return;
    };
    let ledger_env = [("PATRON_DATABASE_URL", database)];
    let examples: [Example; 8] = [
        (env!("CARGO_BIN_EXE_hello"), &[], false),
        (env!("CARGO_BIN_EXE_custom"), &[], false),
        (env!("CARGO_BIN_EXE_greeter"), &[], false),
        (env!("CARGO_BIN_EXE_orders"), &[], true),
        (env!("CARGO_BIN_EXE_payment"), &[], false),
        (env!("CARGO_BIN_EXE_invoice"), &[], false),
        (env!("CARGO_BIN_EXE_accounting"), &[], false),
        (env!("CARGO_BIN_EXE_ledger"), &ledger_env, true),
    ];
    for (bin, env, consumers) in examples {
        let document = printed(bin, "openapi", env);
        let doc: serde_json::Value = serde_json::from_slice(&document).expect("JSON");
        assert!(
            doc["paths"].as_object().is_some_and(|p| !p.is_empty()),
            "{bin}: {doc}"
        );
        if let Some(validator) = &validator {
            let said = check_with(validator, &[], &document);
            assert!(said.contains("OK"), "{bin}: {said}");
        }
        if !consumers {
            continue;
        }
        let document = printed(bin, "asyncapi", env);
        let doc: serde_json::Value = serde_json::from_slice(&document).expect("JSON");
        assert!(
            doc["operations"].as_object().is_some_and(|o| !o.is_empty()),
            "{bin}: {doc}"
        );
        if let Some(cli) = &asyncapi {
            let said = check_with(cli, &["validate", "--fail-severity", "warn"], &document);
            assert!(said.contains("is valid"), "{bin}: {said}");
        }
    }
}

/// Runs schemathesis against `proc`'s own document: every operation, every
/// check (no server error, documented statuses and content types, responses
/// matching their schemas, schema-valid requests accepted, invalid ones
/// refused), a bounded number of examples and a fixed seed.
fn schemathesis(tool: &str, proc: &patron_tests::Proc, headers: &[&str]) {
    let mut command = std::process::Command::new(tool);
    command
        .args(["run", &proc.url("/openapi.json"), "--url", &proc.url("")])
        .args(["--checks", "all", "--max-examples", "60", "--seed", "7"])
        .args(["--request-timeout", "10", "--no-color"])
        // Its own files (reports, example database) stay out of the checkout.
        .current_dir(std::env::temp_dir());
    for header in headers {
        command.args(["--header", header]);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("No issues found"),
        "schemathesis found problems in {}:\n{said}{}",
        proc.url("/openapi.json"),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `hello` (with an API key, so the authenticated route is exercised too)
/// and `orders` (its route publishes to RabbitMQ) pass schemathesis.
#[tokio::test]
async fn schemathesis_finds_nothing_in_hello_and_orders() {
    let Some(tool) = patron_tests::service("PATRON_TEST_SCHEMATHESIS", "schemathesis") else {
        return;
    };
    let Some(amqp) = patron_tests::amqp::url() else {
        return;
    };
    let mut hello = patron_tests::Proc::spawn(
        env!("CARGO_BIN_EXE_hello"),
        &[("PATRON_API_KEYS", "test-key")],
    );
    hello.wait_alive().await;
    schemathesis(&tool, &hello, &["Authorization: Apikey test-key"]);
    hello.signal(libc::SIGTERM);
    assert_eq!(hello.wait_exit(std::time::Duration::from_secs(20)), Some(0));

    let broker = patron_tests::amqp::Broker::connect(&amqp).await;
    broker.fresh_queue("orders").await;
    broker.fresh_queue("orders.dlq").await;
    let mut orders =
        patron_tests::Proc::spawn(env!("CARGO_BIN_EXE_orders"), &[("PATRON_AMQP_URL", &amqp)]);
    orders.wait_alive().await;
    schemathesis(&tool, &orders, &[]);
    orders.signal(libc::SIGTERM);
    assert_eq!(
        orders.wait_exit(std::time::Duration::from_secs(30)),
        Some(0)
    );
    broker.delete("orders").await;
    broker.delete("orders.dlq").await;
    broker.close().await;
}
