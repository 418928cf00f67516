//! `patron::client::sql::Db` against the real PostgreSQL
//! (`PATRON_TEST_DATABASE_URL`): spans and metrics per query, a route
//! using the pool, `/ready` pinging it (503 for a closed port), the pool
//! closed at shutdown, and transactions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use patron::client::sql::{Db, SqlError};
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::{free_port, prom, service};
use serde_json::Value;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::set_default;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

fn database() -> Option<String> {
    service("PATRON_TEST_DATABASE_URL", "PostgreSQL")
}

/// A unique table name for one test run.
fn table(what: &str) -> String {
    format!("patron_{what}_{}", uuid::Uuid::new_v4().simple())
}

/// Every span opened while it is the default subscriber: name and fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanRecord>>>);

/// A span's name and its fields as text.
type SpanRecord = (String, HashMap<String, String>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S> Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        fields.insert("#id".into(), id.into_u64().to_string());
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        let id = id.into_u64().to_string();
        if let Some((_, fields)) = spans.iter_mut().rev().find(|(_, f)| f["#id"] == id) {
            values.record(&mut Fields(fields));
        }
    }
}

fn sql_metric(operation: &str, outcome: &str) -> f64 {
    prom::global(
        "db_client_operation_duration_seconds_count",
        &[
            ("db_system", "postgresql"),
            ("db_operation", operation),
            ("outcome", outcome),
        ],
    )
}

#[tokio::test(flavor = "current_thread")]
async fn each_query_is_a_span_without_parameters_and_a_histogram_sample() {
    let Some(url) = database() else { return };
    let spans = Spans::default();
    let _guard = set_default(tracing_subscriber::registry().with(spans.clone()));
    let db = Db::connect(&url).await.unwrap();
    let t = table("spans");
    let inserts_before = sql_metric("INSERT", "ok");
    let errors_before = sql_metric("SELECT", "error");

    sqlx::query(&format!(
        "CREATE TABLE {t} (id BIGINT PRIMARY KEY, secret TEXT NOT NULL)"
    ))
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(&format!("INSERT INTO {t} (id, secret) VALUES ($1, $2)"))
        .bind(1_i64)
        .bind("hunter2-parameter")
        .execute(&db)
        .await
        .unwrap();
    let (secret,): (String,) = sqlx::query_as(&format!("SELECT secret FROM {t} WHERE id = $1"))
        .bind(1_i64)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(secret, "hunter2-parameter");
    let missing = sqlx::query(&format!("SELECT nope FROM {t}"))
        .fetch_all(&db)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
    sqlx::query(&format!("DROP TABLE {t}"))
        .execute(&db)
        .await
        .unwrap();

    let spans = spans.0.lock().unwrap().clone();
    let sql: Vec<_> = spans.iter().filter(|(n, _)| n == "SQL query").collect();
    let ops: Vec<&str> = sql
        .iter()
        .map(|(_, f)| f["db.operation"].as_str())
        .collect();
    assert_eq!(
        ops,
        ["CREATE", "INSERT", "SELECT", "SELECT", "DROP"],
        "{sql:?}"
    );
    for (_, f) in &sql {
        assert_eq!(f["db.system"], "postgresql");
        assert_eq!(f["otel.kind"], "client");
        assert_eq!(f["db.name"], "postgres");
        assert_eq!(f["server.address"], "127.0.0.1:5432");
        assert!(
            !f.values().any(|v| v.contains("hunter2")),
            "bound parameters never reach a span: {f:?}"
        );
    }
    let insert = &sql[1].1;
    assert_eq!(
        insert["db.statement"],
        format!("INSERT INTO {t} (id, secret) VALUES ($1, $2)")
    );
    let failed = &sql[3].1;
    assert_eq!(failed["otel.status_code"], "ERROR", "{failed:?}");
    assert!(failed["error.message"].contains("nope"), "{failed:?}");

    // At least: other tests in this binary insert too when run in threads.
    assert!(sql_metric("INSERT", "ok") >= inserts_before + 1.0);
    assert_eq!(sql_metric("SELECT", "error"), errors_before + 1.0);
}

#[patron::route(GET "/sql/sum")]
async fn sum(db: Dep<Db>) -> Result<String, patron::Error> {
    let (n,): (i32,) = sqlx::query_as("SELECT 40 + 2")
        .fetch_one(&*db)
        .await
        .map_err(|e| patron::Error::msg(format!("sum: {e}")))?;
    Ok(n.to_string())
}

async fn ready(server: &TestServer) -> (u16, Value) {
    let resp = reqwest::get(server.url("/ready")).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_takes_the_pool_ready_pings_it_and_shutdown_closes_it() {
    let Some(url) = database() else { return };
    let db = Db::connect_lazy(&url).unwrap();
    let server = TestServer::start(Service::new("sql-tests").with_client(db.clone()))
        .await
        .unwrap();
    let answer = reqwest::get(server.url("/sql/sum")).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "42");
    let (status, body) = ready(&server).await;
    assert_eq!(status, 200, "{body}");
    let checks = body["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "sql" && c["status"] == "ok"),
        "{body}"
    );
    assert!(!db.pool().is_closed());
    server.shutdown().await.unwrap();
    assert!(db.pool().is_closed(), "the service closed the pool");
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_is_503_naming_sql_when_the_database_does_not_answer() {
    // A closed port stands for a stopped PostgreSQL: the test must not stop
    // the shared server.
    let closed = format!(
        "postgres://postgres:hunter2@127.0.0.1:{}/postgres",
        free_port()
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect_lazy(&closed)
        .unwrap();
    let server = TestServer::start(Service::new("sql-down").with_client(Db::from_pool(pool)))
        .await
        .unwrap();
    let (status, body) = ready(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("sql"), "{body}");
    let sql = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sql")
        .unwrap()
        .clone();
    assert_eq!(sql["status"], "failing", "{body}");
    let error = sql["error"].as_str().unwrap();
    assert!(error.contains("PostgreSQL at 127.0.0.1:"), "{error}");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    // The route fails with a 500 once the pool's acquire timeout is over.
    let resp = reqwest::get(server.url("/sql/sum")).await.unwrap();
    assert_eq!(resp.status(), 500);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_commit_or_roll_back_and_are_instrumented() {
    let Some(url) = database() else { return };
    let db = Db::connect(&url).await.unwrap();
    let t = table("tx");
    sqlx::query(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY)"))
        .execute(&db)
        .await
        .unwrap();
    let deletes_before = sql_metric("DELETE", "ok");

    let mut tx = db.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {t} VALUES (1), (2)"))
        .execute(&mut tx)
        .await
        .unwrap();
    sqlx::query(&format!("DELETE FROM {t} WHERE id = 2"))
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = db.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {t} VALUES (3)"))
        .execute(&mut tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    {
        let mut dropped = db.begin().await.unwrap();
        sqlx::query(&format!("INSERT INTO {t} VALUES (4)"))
            .execute(&mut dropped)
            .await
            .unwrap();
    }

    let ids: Vec<(i64,)> = sqlx::query_as(&format!("SELECT id FROM {t} ORDER BY id"))
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(ids, [(1,)], "committed rows only");
    assert_eq!(sql_metric("DELETE", "ok"), deletes_before + 1.0);
    sqlx::query(&format!("DROP TABLE {t}"))
        .execute(&db)
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_urls_and_a_missing_url_are_clear_errors_without_the_password() {
    let err = Db::connect_lazy("postgres://app:hunter2@db:notaport/app").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("PostgreSQL at postgres://app:***@db"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    let err = Db::from_config(&patron::config::Config::default()).unwrap_err();
    assert!(matches!(err, SqlError::NoUrl));
    assert!(err.to_string().contains("PATRON_DATABASE_URL"), "{err}");

    let err = Db::connect(&format!("postgres://postgres@127.0.0.1:{}/x", free_port()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("PostgreSQL at postgres://postgres@127.0.0.1:"),
        "{err}"
    );
}
