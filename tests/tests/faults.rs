//! The fault suite: the `ledger` example (one consumer that records every
//! handling in PostgreSQL) as a real process against the real brokers,
//! killed (`kill -9`) or stopped (SIGTERM) mid-stream and started again,
//! with numbered messages published by an independent client. Each test
//! counts what came out: every id handled at least once (nothing lost),
//! duplicates only among what was in flight at the kill (none after a
//! SIGTERM), nothing left in the queue and nothing dead-lettered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use patron_tests::{Proc, amqp, eventually, kafka, service, sqs};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;

const LEDGER: &str = env!("CARGO_BIN_EXE_ledger");
/// Messages published per test.
const N: i64 = 2000;
/// Handled entries after which the service is killed or stopped.
const AT: i64 = 400;
/// The longest any phase may take.
const PHASE: Duration = Duration::from_secs(120);

fn unique(prefix: &str) -> String {
    format!("patron_fault_{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The ledger table of one test.
struct Ledger {
    pool: PgPool,
    table: String,
}

impl Ledger {
    async fn new(url: &str) -> Ledger {
        let pool = PgPool::connect(url).await.expect("connect to PostgreSQL");
        let table = unique("ledger");
        sqlx::query(&format!(
            "CREATE TABLE {table} (broker text NOT NULL, id bigint NOT NULL, handled_at timestamptz NOT NULL DEFAULT now())"
        ))
        .execute(&pool)
        .await
        .expect("create the ledger table");
        Ledger { pool, table }
    }

    /// (handlings, distinct ids).
    async fn counts(&self) -> (i64, i64) {
        sqlx::query_as(&format!(
            "SELECT count(*), count(DISTINCT id) FROM {}",
            self.table
        ))
        .fetch_one(&self.pool)
        .await
        .expect("count entries")
    }

    /// Ids handled more than once, with how often.
    async fn duplicates(&self) -> BTreeMap<i64, i64> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT id, count(*) FROM {} GROUP BY id HAVING count(*) > 1",
            self.table
        ))
        .fetch_all(&self.pool)
        .await
        .expect("find duplicates");
        rows.into_iter().collect()
    }

    async fn drop_table(&self) {
        let _ = sqlx::query(&format!("DROP TABLE {}", self.table))
            .execute(&self.pool)
            .await;
    }

    /// Waits until `n` distinct ids were handled.
    async fn until_distinct(&self, n: i64) -> bool {
        eventually(PHASE, || async { self.counts().await.1 >= n }).await
    }
}

/// Everything the ledger process needs, from the test environment.
struct Env {
    database: String,
    amqp: Option<String>,
    kafka: Option<String>,
    sqs: Option<String>,
}

impl Env {
    fn get() -> Option<Env> {
        Some(Env {
            database: service("PATRON_TEST_DATABASE_URL", "PostgreSQL")?,
            amqp: None,
            kafka: None,
            sqs: None,
        })
    }

    fn spawn(&self, broker: &str, source: &str, table: &str) -> Proc {
        let mut env: Vec<(&str, &str)> = vec![
            ("LEDGER_BROKER", broker),
            ("LEDGER_SOURCE", source),
            ("LEDGER_TABLE", table),
            ("LEDGER_WORK_MS", "2"),
            ("LEDGER_VISIBILITY_SECS", "3"),
            ("LEDGER_KAFKA_SESSION_MS", "6000"),
            ("PATRON_DATABASE_URL", &self.database),
            ("PATRON_SHUTDOWN_TIMEOUT", "10s"),
            ("PATRON_LOG_LEVEL", "warn"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ];
        if let Some(url) = &self.amqp {
            env.push(("PATRON_AMQP_URL", url));
        }
        if let Some(brokers) = &self.kafka {
            env.push(("PATRON_KAFKA_BROKERS", brokers));
        }
        if let Some(endpoint) = &self.sqs {
            env.push(("PATRON_SQS_ENDPOINT", endpoint));
        }
        Proc::spawn(LEDGER, &env)
    }
}

/// How the first run ends.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stop {
    Kill,
    Term,
}

/// Stops `proc` the `how` way once `AT` entries were handled; returns the
/// handlings so far and, for SIGTERM, how long the exit took.
async fn interrupt(proc: &mut Proc, ledger: &Ledger, how: Stop) -> (i64, Option<Duration>) {
    assert!(
        eventually(PHASE, || async { ledger.counts().await.1 >= AT }).await,
        "the first run handled {AT} entries; stderr {:?}",
        proc.stderr()
    );
    let signalled = Instant::now();
    match how {
        Stop::Kill => {
            proc.signal(libc::SIGKILL);
            let _ = proc.wait_exit(Duration::from_secs(10));
            (ledger.counts().await.0, None)
        }
        Stop::Term => {
            proc.signal(libc::SIGTERM);
            let code = proc.wait_exit(Duration::from_secs(20));
            let took = signalled.elapsed();
            assert_eq!(code, Some(0), "SIGTERM exits 0; stderr {:?}", proc.stderr());
            assert!(
                took < Duration::from_secs(10),
                "exit within the shutdown timeout: {took:?}"
            );
            (ledger.counts().await.0, Some(took))
        }
    }
}

/// Lets the second run finish every id, stops it cleanly, and returns
/// (handlings, distinct, duplicates).
async fn finish(mut proc: Proc, ledger: &Ledger) -> (i64, i64, BTreeMap<i64, i64>) {
    assert!(
        ledger.until_distinct(N).await,
        "every id handled after the restart: {:?}; stderr {:?}",
        ledger.counts().await,
        proc.stderr()
    );
    // Anything still on its way in would show here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(20)), Some(0));
    let (entries, distinct) = ledger.counts().await;
    (entries, distinct, ledger.duplicates().await)
}

async fn amqp_scenario(how: Stop) {
    let Some(mut env) = Env::get() else { return };
    let Some(url) = amqp::url() else { return };
    env.amqp = Some(url.clone());
    let broker = amqp::Broker::connect(&url).await;
    let queue = unique("amqp");
    let dlq = format!("{queue}.dlq");
    broker.fresh_queue(&queue).await;
    broker.fresh_queue(&dlq).await;
    for id in 0..N {
        broker.publish(&queue, id.to_string().as_bytes(), &[]).await;
    }
    let ledger = Ledger::new(&env.database).await;
    let mut first = env.spawn("amqp", &queue, &ledger.table);
    let (before, took) = interrupt(&mut first, &ledger, how).await;
    let second = env.spawn("amqp", &queue, &ledger.table);
    let (entries, distinct, duplicates) = finish(second, &ledger).await;
    let extra: i64 = duplicates.values().map(|n| n - 1).sum();
    println!(
        "AMQP {how:?} at {before} handled (exit {took:?}): published {N}, handled {entries}, distinct {distinct}, duplicates {extra}, lost {}",
        N - distinct
    );
    assert_eq!(distinct, N, "nothing lost");
    match how {
        // At most the prefetch (10 × concurrency 4) was unacknowledged.
        Stop::Kill => assert!(
            extra <= 40,
            "duplicates {extra} > prefetch 40: {duplicates:?}"
        ),
        Stop::Term => assert_eq!(extra, 0, "a clean stop duplicates nothing: {duplicates:?}"),
    }
    assert_eq!(broker.depth(&queue).await, 0, "nothing left behind");
    assert_eq!(broker.depth(&dlq).await, 0, "nothing dead-lettered");
    broker.delete(&queue).await;
    broker.delete(&dlq).await;
    broker.close().await;
    ledger.drop_table().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_kill_9_mid_stream_loses_nothing() {
    amqp_scenario(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_sigterm_mid_stream_loses_and_duplicates_nothing() {
    amqp_scenario(Stop::Term).await;
}

/// The group's committed offset of partition 0 of `topic`.
fn committed(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .set("group.id", group)
        .create()
        .ok()?;
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition(topic, 0);
    let got = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .ok()?;
    got.elements()
        .first()
        .and_then(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
}

async fn kafka_scenario(how: Stop) {
    let Some(mut env) = Env::get() else { return };
    let Some(brokers) = service("PATRON_TEST_KAFKA_BROKERS", "a Kafka-compatible broker") else {
        return;
    };
    env.kafka = Some(brokers.clone());
    let topic = unique("kafka");
    kafka::create_topic(&brokers, &topic, 1).await;
    kafka::create_topic(&brokers, &format!("{topic}.dlq"), 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("broker.address.family", "v4")
        // Idempotence keeps the order of records in flight together.
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    // In order, to partition 0 (one in flight keeps the order): offset == id.
    let bodies: Vec<String> = (0..N).map(|id| id.to_string()).collect();
    let sends = bodies.iter().map(|body| {
        producer.send(
            FutureRecord::<str, str>::to(&topic)
                .partition(0)
                .payload(body),
            Duration::from_secs(30),
        )
    });
    for sent in futures_util::future::join_all(sends).await {
        sent.expect("produce");
    }
    let ledger = Ledger::new(&env.database).await;
    let mut first = env.spawn("kafka", &topic, &ledger.table);
    let (before, took) = interrupt(&mut first, &ledger, how).await;
    let group = format!("{topic}-ledger");
    let at_kill = committed(&brokers, &group, &topic).unwrap_or(0);
    let second = env.spawn("kafka", &topic, &ledger.table);
    let (entries, distinct, duplicates) = finish(second, &ledger).await;
    let extra: i64 = duplicates.values().map(|n| n - 1).sum();
    println!(
        "Kafka {how:?} at {before} handled (exit {took:?}, committed offset {at_kill}): published {N}, handled {entries}, distinct {distinct}, duplicates {extra}, lost {}",
        N - distinct
    );
    assert_eq!(distinct, N, "nothing lost");
    match how {
        // Only records past the last commit are delivered again.
        Stop::Kill => assert!(
            duplicates.keys().all(|id| *id >= at_kill),
            "a duplicate below the committed offset {at_kill}: {duplicates:?}"
        ),
        Stop::Term => assert_eq!(extra, 0, "a clean stop commits everything: {duplicates:?}"),
    }
    let end = committed(&brokers, &group, &topic);
    assert_eq!(end, Some(N), "everything committed");
    assert_eq!(
        kafka::high_watermark(&brokers, &format!("{topic}.dlq")),
        0,
        "nothing dead-lettered"
    );
    ledger.drop_table().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_kill_9_mid_stream_loses_nothing() {
    kafka_scenario(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_sigterm_mid_stream_loses_and_duplicates_nothing() {
    kafka_scenario(Stop::Term).await;
}

async fn sqs_scenario(how: Stop) {
    let Some(mut env) = Env::get() else { return };
    let Some(endpoint) = sqs::endpoint() else {
        return;
    };
    env.sqs = Some(endpoint.clone());
    let client = sqs::client(&endpoint);
    let queue = unique("sqs");
    let url = sqs::create(&client, &queue).await;
    let dlq_url = sqs::create(&client, &format!("{queue}-dlq")).await;
    let ledger = Ledger::new(&env.database).await;
    // moto's receive scans the whole queue: publish while the consumer
    // runs, at about 200 a second, which it kept up with here, so the
    // queue stays short. (At 400 a second the queue grew to most of the
    // stream and every receive slowed with it: 74 s alone, over two
    // minutes in a suite run.)
    let publisher = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            for start in (0..N).step_by(10) {
                let entries: Vec<_> = (start..(start + 10).min(N))
                    .map(|id| {
                        aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                            .id(id.to_string())
                            .message_body(id.to_string())
                            .build()
                            .expect("entry")
                    })
                    .collect();
                client
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("send a batch");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut first = env.spawn("sqs", &queue, &ledger.table);
    let (before, took) = interrupt(&mut first, &ledger, how).await;
    let second = env.spawn("sqs", &queue, &ledger.table);
    publisher.await.expect("publisher");
    let (entries, distinct, duplicates) = finish(second, &ledger).await;
    let extra: i64 = duplicates.values().map(|n| n - 1).sum();
    println!(
        "SQS {how:?} at {before} handled (exit {took:?}): published {N}, handled {entries}, distinct {distinct}, duplicates {extra}, lost {}",
        N - distinct
    );
    assert_eq!(distinct, N, "nothing lost");
    match how {
        // Handled but not yet deleted: at most the handlers (4) and the
        // deleter's batch (10).
        Stop::Kill => assert!(extra <= 14, "duplicates {extra}: {duplicates:?}"),
        Stop::Term => assert_eq!(extra, 0, "a clean stop deletes everything: {duplicates:?}"),
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            sqs::depth(&client, &url).await == (0, 0)
        })
        .await,
        "nothing left behind"
    );
    assert_eq!(
        sqs::depth(&client, &dlq_url).await,
        (0, 0),
        "nothing dead-lettered"
    );
    sqs::delete(&client, &url).await;
    sqs::delete(&client, &dlq_url).await;
    ledger.drop_table().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_kill_9_mid_stream_loses_nothing() {
    sqs_scenario(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_sigterm_mid_stream_loses_and_duplicates_nothing() {
    sqs_scenario(Stop::Term).await;
}

/// A broker process of the test's own (tansu or moto) on a port of its own,
/// so it can be stopped and started without touching the shared ones.
struct OwnBroker {
    command: Vec<String>,
    envs: Vec<(String, String)>,
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnBroker {
    /// `bin` with `args`, where `{port}` stands for the port, and the
    /// environment variables `envs`.
    fn new(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> OwnBroker {
        let port = patron_tests::free_port();
        let mut command = vec![bin.to_string()];
        command.extend(args.iter().map(|a| a.replace("{port}", &port.to_string())));
        let mut broker = OwnBroker {
            command,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port,
            child: None,
        };
        broker.start();
        broker
    }

    fn answers(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// Starts it and waits until its port answers.
    fn start(&mut self) {
        let child = std::process::Command::new(&self.command[0])
            .args(&self.command[1..])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.command));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "{:?} did not come up",
                self.command
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGKILL: a crash, or a restart that drops connections).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long after `since` `/ready` of `proc` answered 200 again, waiting at
/// most `PHASE`.
async fn ready_again(proc: &Proc, since: Instant) -> Duration {
    let http = reqwest::Client::new();
    let url = proc.url("/ready");
    assert!(
        eventually(PHASE, || async {
            matches!(http.get(&url).send().await, Ok(r) if r.status() == 200)
        })
        .await,
        "/ready is 200 again; stderr {:?}",
        proc.stderr()
    );
    since.elapsed()
}

/// Waits until `/ready` of `proc` answers 503 naming `component`.
async fn unready_naming(proc: &Proc, component: &str) {
    let http = reqwest::Client::new();
    let url = proc.url("/ready");
    let named = eventually(Duration::from_secs(30), || async {
        match http.get(&url).send().await {
            Ok(r) if r.status() == 503 => r.text().await.unwrap_or_default().contains(component),
            _ => false,
        }
    })
    .await;
    assert!(named, "/ready turned 503 naming {component}");
}

/// The promise behind each broker restart: `/ready` 503 while the broker is
/// away, 200 within 2 s of its return, consumption resumes without a
/// service restart, nothing lost.
const RECOVERY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn kafka_broker_restart_turns_readiness_and_loses_nothing() {
    let Some(mut env) = Env::get() else { return };
    let Some(tansu) = service("PATRON_TEST_TANSU_BIN", "the tansu binary") else {
        return;
    };
    // tansu keeps its topics, records and consumer groups in S3 (a moto of
    // the test's own, so the shared one's SQS is not slowed down): they
    // survive the restart, as on a real broker.
    let Some(moto) = service("PATRON_TEST_MOTO_BIN", "the moto server (S3 for tansu)") else {
        return;
    };
    let s3_server = OwnBroker::new(&moto, &["-H", "127.0.0.1", "-p", "{port}"], &[]);
    let s3 = format!("http://127.0.0.1:{}", s3_server.port);
    // S3 bucket names take no `_`: the shared form (`patron-test-…`).
    let bucket = patron_tests::unique("tansu");
    let created = reqwest::Client::new()
        .put(format!("{s3}/{bucket}"))
        .send()
        .await
        .expect("create the tansu bucket");
    assert!(created.status().is_success(), "bucket: {created:?}");
    let storage = format!("s3://{bucket}/");
    let mut broker = OwnBroker::new(
        &tansu,
        &[
            "broker",
            "--listener-url",
            "tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            "tcp://127.0.0.1:{port}",
            "--storage-engine",
            &storage,
        ],
        &[
            ("AWS_ENDPOINT", &s3),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ],
    );
    let brokers = format!("127.0.0.1:{}", broker.port);
    env.kafka = Some(brokers.clone());
    let topic = unique("kafka_restart");
    let produce = |range: std::ops::Range<i64>| {
        let brokers = brokers.clone();
        let topic = topic.clone();
        async move {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("broker.address.family", "v4")
                .create()
                .expect("producer");
            let bodies: Vec<String> = range.map(|id| id.to_string()).collect();
            let sends = bodies.iter().map(|body| {
                producer.send(
                    FutureRecord::<str, str>::to(&topic).payload(body),
                    Duration::from_secs(30),
                )
            });
            for sent in futures_util::future::join_all(sends).await {
                sent.expect("produce");
            }
        }
    };
    kafka::create_topic(&brokers, &topic, 1).await;
    produce(0..N / 2).await;
    let ledger = Ledger::new(&env.database).await;
    let proc = env.spawn("kafka", &topic, &ledger.table);
    proc.wait_alive().await;
    assert!(ledger.until_distinct(N / 2).await, "the first half handled");
    broker.stop();
    unready_naming(&proc, "component:ledger-kafka").await;
    broker.start();
    let back = Instant::now();
    let took = ready_again(&proc, back).await;
    produce(N / 2..N).await;
    assert!(
        ledger.until_distinct(N).await,
        "{:?}",
        ledger.counts().await
    );
    let (entries, distinct) = ledger.counts().await;
    println!(
        "Kafka broker restart: published {N}, handled {entries}, distinct {distinct}, lost {}, /ready 200 again {took:?} after the broker answered",
        N - distinct
    );
    assert_eq!(distinct, N, "nothing lost");
    assert!(
        took <= RECOVERY,
        "ready again within {RECOVERY:?}: {took:?}"
    );
    drop(proc);
    ledger.drop_table().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_server_restart_turns_readiness_and_loses_nothing() {
    let Some(mut env) = Env::get() else { return };
    let Some(moto) = service("PATRON_TEST_MOTO_BIN", "the moto server") else {
        return;
    };
    let mut server = OwnBroker::new(&moto, &["-H", "127.0.0.1", "-p", "{port}"], &[]);
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    env.sqs = Some(endpoint.clone());
    let client = sqs::client(&endpoint);
    let queue = unique("sqs_restart");
    let dlq = format!("{queue}-dlq");
    let publish = |range: std::ops::Range<i64>| {
        let (client, queue, dlq) = (client.clone(), queue.clone(), dlq.clone());
        async move {
            // moto keeps nothing: (re)create the queues first.
            let url = sqs::create(&client, &queue).await;
            sqs::create(&client, &dlq).await;
            for id in range {
                sqs::send(&client, &url, &id.to_string(), &[]).await;
            }
        }
    };
    publish(0..N / 4).await;
    let ledger = Ledger::new(&env.database).await;
    let proc = env.spawn("sqs", &queue, &ledger.table);
    proc.wait_alive().await;
    assert!(ledger.until_distinct(N / 4).await, "the first part handled");
    server.stop();
    unready_naming(&proc, "component:ledger-sqs").await;
    server.start();
    let back = Instant::now();
    // moto keeps nothing: the queues come back first, then the messages.
    sqs::create(&client, &queue).await;
    sqs::create(&client, &dlq).await;
    let took = ready_again(&proc, back).await;
    publish(N / 4..N / 2).await;
    assert!(
        ledger.until_distinct(N / 2).await,
        "{:?}",
        ledger.counts().await
    );
    let (entries, distinct) = ledger.counts().await;
    println!(
        "SQS server restart: published {}, handled {entries}, distinct {distinct}, lost {}, /ready 200 again {took:?} after the server answered",
        N / 2,
        N / 2 - distinct
    );
    assert_eq!(distinct, N / 2, "nothing lost");
    assert!(
        took <= RECOVERY,
        "ready again within {RECOVERY:?}: {took:?}"
    );
    drop(proc);
    ledger.drop_table().await;
}

/// Starts RabbitMQ's application again when dropped, whatever happened.
struct AppRestart;

impl Drop for AppRestart {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .status();
    }
}

/// Runs alone (`.config/nextest.toml`): it stops the shared RabbitMQ.
#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_restart_turns_readiness_and_loses_nothing() {
    let Some(mut env) = Env::get() else { return };
    let Some(url) = amqp::url() else { return };
    env.amqp = Some(url.clone());
    let broker = amqp::Broker::connect(&url).await;
    let queue = unique("amqp_restart");
    broker.fresh_queue(&queue).await;
    broker.fresh_queue(&format!("{queue}.dlq")).await;
    for id in 0..N / 2 {
        broker.publish(&queue, id.to_string().as_bytes(), &[]).await;
    }
    broker.close().await;
    let ledger = Ledger::new(&env.database).await;
    let proc = env.spawn("amqp", &queue, &ledger.table);
    proc.wait_alive().await;
    assert!(ledger.until_distinct(N / 4).await, "consuming");
    let guard = AppRestart;
    let stopped = std::process::Command::new("rabbitmqctl")
        .arg("stop_app")
        .status()
        .expect("rabbitmqctl stop_app");
    assert!(stopped.success());
    unready_naming(&proc, "component:ledger-amqp").await;
    let started = std::process::Command::new("rabbitmqctl")
        .arg("start_app")
        .status()
        .expect("rabbitmqctl start_app");
    assert!(started.success());
    drop(guard);
    let back = Instant::now();
    let took = ready_again(&proc, back).await;
    let broker = amqp::Broker::connect(&url).await;
    for id in N / 2..N {
        broker.publish(&queue, id.to_string().as_bytes(), &[]).await;
    }
    assert!(
        ledger.until_distinct(N).await,
        "{:?}",
        ledger.counts().await
    );
    let (entries, distinct) = ledger.counts().await;
    let duplicates = entries - distinct;
    println!(
        "RabbitMQ stop_app/start_app: published {N}, handled {entries}, distinct {distinct}, duplicates {duplicates}, lost {}, /ready 200 again {took:?} after start_app returned",
        N - distinct
    );
    assert_eq!(distinct, N, "nothing lost");
    assert!(
        duplicates <= 40,
        "duplicates within the prefetch: {duplicates}"
    );
    assert!(
        took <= RECOVERY,
        "ready again within {RECOVERY:?}: {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            broker.depth(&queue).await == 0
        })
        .await
    );
    drop(proc);
    broker.delete(&queue).await;
    broker.delete(&format!("{queue}.dlq")).await;
    broker.close().await;
    ledger.drop_table().await;
}
