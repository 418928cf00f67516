//! A consumer service that records, in PostgreSQL, every message it
//! handles — one consumer, on the broker `LEDGER_BROKER` names — so that
//! what it did can be counted from outside: the subject of patron's fault
//! tests (kill -9, SIGTERM, broker restarts), and a template for a
//! consumer that writes to a database.
//!
//! Each message body is an entry id (text); the handler inserts
//! `(broker, id)` into the table `LEDGER_TABLE`, one row per handling, so
//! duplicates show as repeated ids. `GET /ledger` answers the counts.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LEDGER_BROKER` | `amqp` | `amqp`, `kafka` or `sqs` |
//! | `LEDGER_SOURCE` | `ledger` | the queue (AMQP, SQS) or topic (Kafka); the DLQ is `<source>.dlq` (AMQP, Kafka) or `<source>-dlq` (SQS) |
//! | `LEDGER_TABLE` | `ledger_entries` | the table, created if missing |
//! | `LEDGER_WORK_MS` | `0` | simulated work per message, in milliseconds |
//! | `LEDGER_VISIBILITY_SECS` | `30` | SQS visibility timeout |
//! | `LEDGER_KAFKA_SESSION_MS` | `45000` | Kafka group session timeout: how soon a killed instance's partitions move |
//! | `PATRON_DATABASE_URL` | — | the PostgreSQL database |
//!
//! Run it with the brokers and PostgreSQL that `scripts/services` starts:
//!
//! ```text
//! eval "$(scripts/services)"
//! PATRON_DATABASE_URL=$PATRON_TEST_DATABASE_URL cargo run -p examples --example ledger
//! # in another shell: publish "1", "2", … to the `ledger` queue, then
//! curl localhost:50000/ledger
//! ```

use std::time::Duration;

use patron::client::sql::Db;
use patron::consumer::amqp::AmqpConsumer;
use patron::consumer::kafka::KafkaConsumer;
use patron::consumer::sqs::SqsConsumer;
use patron::consumer::{Message, handler_fn};
use patron::prelude::*;

/// What the service was told to do.
struct Settings {
    broker: String,
    source: String,
    table: String,
    work: Duration,
    visibility: Duration,
    kafka_session_ms: u64,
}

impl Settings {
    fn from_env() -> patron::Result<Settings> {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let number = |name: &str, default: u64| -> patron::Result<u64> {
            var(name, &default.to_string())
                .trim()
                .parse()
                .map_err(|_| patron::Error::msg(format!("{name} must be a whole number")))
        };
        let table = var("LEDGER_TABLE", "ledger_entries");
        if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(patron::Error::msg(format!(
                "LEDGER_TABLE {table:?} may hold only letters, digits and _"
            )));
        }
        Ok(Settings {
            broker: var("LEDGER_BROKER", "amqp"),
            source: var("LEDGER_SOURCE", "ledger"),
            table,
            work: Duration::from_millis(number("LEDGER_WORK_MS", 0)?),
            visibility: Duration::from_secs(number("LEDGER_VISIBILITY_SECS", 30)?),
            kafka_session_ms: number("LEDGER_KAFKA_SESSION_MS", 45_000)?,
        })
    }
}

/// Where handlings are recorded.
#[derive(Clone)]
struct Book {
    db: Db,
    insert: String,
    count: String,
    broker: &'static str,
    work: Duration,
}

impl Book {
    async fn record(&self, msg: Message<String>) -> patron::Result<()> {
        let id: i64 = msg.payload().trim().parse().map_err(|_| {
            patron::Error::unprocessable(format!("entry id {:?} is not a number", msg.payload()))
        })?;
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        sqlx::query(&self.insert)
            .bind(self.broker)
            .bind(id)
            .execute(self.db.pool())
            .await
            .map_err(|e| patron::Error::msg(format!("recording entry {id}: {e}")))?;
        Ok(())
    }
}

#[derive(Serialize, schemars::JsonSchema)]
struct Counts {
    entries: i64,
    distinct: i64,
}

#[patron::route(GET "/ledger")]
async fn counts(book: Dep<Book>) -> Result<Json<Counts>, patron::Error> {
    let (entries, distinct): (i64, i64) = sqlx::query_as(&book.count)
        .fetch_one(book.db.pool())
        .await
        .map_err(|e| patron::Error::msg(format!("counting entries: {e}")))?;
    Ok(Json(Counts { entries, distinct }))
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    let settings = Settings::from_env()?;
    let db = Db::connect(
        service
            .current_config()
            .database_url
            .as_ref()
            .ok_or_else(|| patron::Error::msg("set PATRON_DATABASE_URL"))?
            .expose(),
    )
    .await?;
    let table = &settings.table;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (broker text NOT NULL, id bigint NOT NULL, handled_at timestamptz NOT NULL DEFAULT now())"
    ))
    .execute(db.pool())
    .await
    .map_err(|e| patron::Error::msg(format!("creating table {table}: {e}")))?;
    let broker: &'static str = match settings.broker.as_str() {
        "amqp" => "amqp",
        "kafka" => "kafka",
        "sqs" => "sqs",
        other => {
            return Err(patron::Error::msg(format!(
                "LEDGER_BROKER {other:?}: expected amqp, kafka or sqs"
            )));
        }
    };
    let book = Book {
        db: db.clone(),
        insert: format!("INSERT INTO {table} (broker, id) VALUES ($1, $2)"),
        count: format!(
            "SELECT count(*), count(DISTINCT id) FROM {table} WHERE broker = '{broker}'"
        ),
        broker,
        work: settings.work,
    };
    let handler = {
        let book = book.clone();
        handler_fn(move |msg: Message<String>| {
            let book = book.clone();
            async move { book.record(msg).await }
        })
    };
    let source = settings.source.as_str();
    let service = match broker {
        "amqp" => service.with_component(
            AmqpConsumer::new(source, handler)
                .name(format!("ledger-{broker}"))
                .declare(true)
                .concurrency(4)
                .dlq(format!("{source}.dlq")),
        ),
        "kafka" => {
            let brokers = service
                .current_config()
                .kafka_brokers
                .clone()
                .unwrap_or_else(|| "127.0.0.1:9092".to_string());
            service.with_component(
                KafkaConsumer::new([source], format!("{source}-ledger"), handler)
                    .name(format!("ledger-{broker}"))
                    .brokers(brokers)
                    .set("session.timeout.ms", settings.kafka_session_ms.to_string())
                    .set(
                        "heartbeat.interval.ms",
                        (settings.kafka_session_ms / 6).max(100).to_string(),
                    )
                    .dlq(format!("{source}.dlq")),
            )
        }
        _ => service.with_component(
            SqsConsumer::new(source, handler)
                .name(format!("ledger-{broker}"))
                .concurrency(4)
                .visibility(settings.visibility)
                .wait(Duration::from_secs(1))
                .dlq(format!("{source}-dlq")),
        ),
    };
    Ok(service.provide(book).with_client(db))
}
