//! Consumer overhead benchmark (run by `scripts/bench-consumers`): the same
//! RabbitMQ queue depth consumed by a raw lapin loop (prefetch P, manual
//! ack of each message) and by a patron AMQP consumer (same prefetch,
//! concurrency 1, a handler that decodes JSON and returns `Ok`), in one
//! process, interleaved A B A B.
//!
//! Each run pre-fills its own queue with N messages, then times the
//! consumption from the first delivery to the N-th acknowledgement, and
//! reads the process's CPU time (user + system, `getrusage`) over the
//! same window. Prints messages/s and CPU µs/message per run, then the
//! medians and the ratios patron / raw.
//!
//! With `PATRON_SQS_ENDPOINT` set, the same for SQS: a raw loop that
//! receives up to 10 messages (1 s long poll), decodes them and deletes them
//! with one `DeleteMessageBatch`, against a patron SQS consumer
//! (concurrency 1, `max_messages` 10).
//!
//! With `PATRON_KAFKA_BROKERS` set, the same for Kafka: a raw rdkafka
//! `StreamConsumer` loop (receive, decode, store the offset; librdkafka
//! commits stored offsets every second — the usual at-least-once pattern)
//! against a patron Kafka consumer (concurrency 1), each on a fresh
//! one-partition topic pre-filled with N records. A third loop, the raw
//! one also reading each record's headers, shows what reading trace
//! context costs by itself: librdkafka parses a record's headers on
//! request, with an allocation even when there are none. A fourth, the raw
//! loop taking records as patron does (`rd_kafka_consume_batch_queue` on a
//! queue the partition is forwarded to, headers read), is the floor for
//! patron's own way of receiving.
//!
//! For profiling one side alone: `bench_consumers kafka-fill N` (prints a
//! new topic's name), then `bench_consumers kafka-raw|kafka-raw-headers|kafka-patron TOPIC N`;
//! `bench_consumers kafka-raw-fresh|kafka-raw-headers-fresh|kafka-raw-batch-fresh|kafka-patron-fresh N` fills a topic and
//! reads it in the same process (the CPU-bound case of the full run).
//!
//! One AMQP side alone: `bench_consumers amqp-fill QUEUE N`, then
//! `bench_consumers amqp-raw|amqp-patron QUEUE N [PREFETCH]`.
//!
//! Usage: `bench_consumers [rounds (3)] [AMQP messages (20000)] [prefetch (50)] [SQS messages (2000)] [Kafka messages (20000)]`,
//! broker from `PATRON_AMQP_URL`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use patron::consumer::amqp::AmqpConsumer;
use patron::consumer::{Message, handler_fn};
use patron::prelude::*;
use patron::test::TestServer;

#[derive(Deserialize)]
struct Item {
    id: u64,
}

/// Process CPU time (user + system) in microseconds.
fn cpu_micros() -> f64 {
    // getrusage's total is the scheduler's exact run time (µs), where
    // /proc/self/stat counts 10 ms ticks: too coarse for 0.1 µs per
    // message over a few hundred thousand messages.
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

async fn fill(channel: &Channel, queue: &str, n: u64) {
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
    let mut confirms = Vec::with_capacity(1000);
    for id in 0..n {
        let body = format!(r#"{{"id":{id}}}"#);
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await
            .expect("publish");
        confirms.push(confirm);
        if confirms.len() == 1000 {
            for c in confirms.drain(..) {
                c.await.expect("confirm");
            }
        }
    }
    for c in confirms {
        c.await.expect("confirm");
    }
}

struct Run {
    per_sec: f64,
    cpu_per_msg: f64,
}

/// One loop's runs over the rounds: each printed as it comes, medians at
/// the end.
#[derive(Default)]
struct Series {
    per_sec: Vec<f64>,
    cpu_per_msg: Vec<f64>,
}

impl Series {
    fn add(&mut self, round: usize, label: &str, run: Run) {
        println!(
            "round {round} {label}: {:>9.0} msg/s  {:>6.2} CPU µs/msg",
            run.per_sec, run.cpu_per_msg
        );
        self.per_sec.push(run.per_sec);
        self.cpu_per_msg.push(run.cpu_per_msg);
    }

    /// (median msg/s, median CPU µs/msg).
    fn medians(self) -> (f64, f64) {
        (median(self.per_sec), median(self.cpu_per_msg))
    }
}

/// What a patron consumer's handler counts: when the first record arrived,
/// and a wake-up when the N-th did. Waiting on it instead of polling the
/// count keeps the runtime from waking every millisecond, which the raw
/// loops do not pay.
struct Handled {
    n: u64,
    count: AtomicU64,
    first: std::sync::Mutex<Option<(Instant, f64)>>,
    all: tokio::sync::Notify,
}

impl Handled {
    fn new(n: u64) -> Arc<Handled> {
        Arc::new(Handled {
            n,
            count: AtomicU64::new(0),
            first: std::sync::Mutex::new(None),
            all: tokio::sync::Notify::new(),
        })
    }

    /// Called by the handler for each message.
    fn one(&self) {
        let done = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if done == 1 {
            *self.first.lock().unwrap() = Some((Instant::now(), cpu_micros()));
        }
        if done == self.n {
            self.all.notify_one();
        }
    }

    /// Waits for the N-th message.
    async fn all(&self) {
        self.all.notified().await;
    }

    /// The rate and CPU per message from the first message to `end`.
    fn run(&self, end: (Instant, f64)) -> Run {
        let (t0, cpu0) = self.first.lock().unwrap().expect("a message was handled");
        Run {
            per_sec: self.n as f64 / (end.0 - t0).as_secs_f64(),
            cpu_per_msg: (end.1 - cpu0) / self.n as f64,
        }
    }
}

async fn raw(url: &str, queue: &str, n: u64, prefetch: u16) -> Run {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut start = None;
    let mut cpu0 = 0.0;
    let mut done = 0;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.expect("delivery");
        if start.is_none() {
            start = Some(Instant::now());
            cpu0 = cpu_micros();
        }
        let item: Item = serde_json::from_slice(&delivery.data).expect("json");
        std::hint::black_box(item.id);
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        done += 1;
        if done == n {
            break;
        }
    }
    let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
    let cpu = cpu_micros() - cpu0;
    let _ = conn.close(200, "done".into()).await;
    Run {
        per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_per_msg: cpu / n as f64,
    }
}

async fn patron(url: &str, queue: &str, n: u64, prefetch: u16) -> Run {
    let handled = Handled::new(n);
    let h = handled.clone();
    let consumer = AmqpConsumer::new(
        queue,
        handler_fn(move |msg: Message<Json<Item>>| {
            h.one();
            std::hint::black_box(msg.id);
            async { Ok::<(), patron::Error>(()) }
        }),
    )
    .url(url)
    .prefetch(prefetch);
    let server = TestServer::start(
        Service::new("bench")
            .with_consumers(std::iter::empty())
            .with_component(consumer),
    )
    .await
    .expect("start");
    // The last acknowledgement follows the last handler call by one frame.
    handled.all().await;
    let end = (Instant::now(), cpu_micros());
    server.shutdown().await.expect("shutdown");
    handled.run(end)
}

mod sqs_bench {
    use super::*;
    use aws_sdk_sqs::Client;
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
    use patron::consumer::sqs::SqsConsumer;

    pub fn client(endpoint: &str) -> Client {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
            .build();
        Client::from_conf(conf)
    }

    /// Recreates `queue` with `n` messages; returns its URL.
    pub async fn fill(client: &Client, queue: &str, n: u64) -> String {
        if let Ok(out) = client.get_queue_url().queue_name(queue).send().await
            && let Some(url) = out.queue_url
        {
            let _ = client.delete_queue().queue_url(url).send().await;
        }
        let url = client
            .create_queue()
            .queue_name(queue)
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue URL");
        let mut id = 0;
        while id < n {
            let entries: Vec<_> = (id..(id + 10).min(n))
                .map(|i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(format!(r#"{{"id":{i}}}"#))
                        .build()
                        .expect("entry")
                })
                .collect();
            id += entries.len() as u64;
            client
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send batch");
        }
        url
    }

    pub async fn raw(client: &Client, url: &str, n: u64) -> Run {
        let mut start = None;
        let mut cpu0 = 0.0;
        let mut done = 0;
        while done < n {
            let out = client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                continue;
            }
            if start.is_none() {
                start = Some(Instant::now());
                cpu0 = cpu_micros();
            }
            let mut entries = Vec::with_capacity(messages.len());
            for (i, m) in messages.iter().enumerate() {
                let item: Item = serde_json::from_str(m.body().unwrap_or_default()).expect("json");
                std::hint::black_box(item.id);
                entries.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .expect("entry"),
                );
            }
            done += entries.len() as u64;
            client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("delete batch");
        }
        let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
        Run {
            per_sec: n as f64 / elapsed.as_secs_f64(),
            cpu_per_msg: (cpu_micros() - cpu0) / n as f64,
        }
    }

    pub async fn patron(client: &Client, queue: &str, url: &str, n: u64) -> Run {
        let handled = Handled::new(n);
        let h = handled.clone();
        let consumer = SqsConsumer::new(
            queue,
            handler_fn(move |msg: Message<Json<Item>>| {
                h.one();
                std::hint::black_box(msg.id);
                async { Ok::<(), patron::Error>(()) }
            }),
        )
        .client(client.clone())
        .wait(Duration::from_secs(1));
        let server = TestServer::start(
            Service::new("bench")
                .with_consumers(std::iter::empty())
                .with_component(consumer),
        )
        .await
        .expect("start");
        // Wait for the handlers without calling the server (it is the
        // bottleneck); then, since deletes are batched, until the queue
        // reports none left.
        handled.all().await;
        loop {
            let left = client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                )
                .send()
                .await
                .ok()
                .and_then(|o| o.attributes().cloned())
                .map(|a| {
                    a.values()
                        .filter_map(|v| v.parse::<u64>().ok())
                        .sum::<u64>()
                })
                .unwrap_or(1);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let end = (Instant::now(), cpu_micros());
        server.shutdown().await.expect("shutdown");
        handled.run(end)
    }
}

mod kafka_bench {
    use super::*;
    use patron::consumer::kafka::KafkaConsumer;
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers as _, Message as _};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    fn unique(what: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("patron-bench-{what}-{nanos}")
    }

    /// A fresh one-partition topic with `n` records; returns its name.
    pub async fn fill(brokers: &str, what: &str, n: u64) -> String {
        let topic = unique(what);
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("broker.address.family", "v4")
            .create()
            .expect("admin client");
        for r in admin
            .create_topics(
                &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .expect("create topic")
        {
            r.expect("topic created");
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("broker.address.family", "v4")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let mut pending = Vec::with_capacity(1000);
        for id in 0..n {
            let body = format!(r#"{{"id":{id}}}"#);
            let producer = producer.clone();
            let topic = topic.clone();
            pending.push(tokio::spawn(async move {
                producer
                    .send(
                        FutureRecord::<str, str>::to(&topic).payload(&body),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }));
            if pending.len() == 1000 {
                for p in pending.drain(..) {
                    p.await.expect("join").expect("produce");
                }
            }
        }
        for p in pending {
            p.await.expect("join").expect("produce");
        }
        topic
    }

    /// The raw loop; with `headers`, it also reads each record's headers
    /// (what a consumer that carries trace context on must do).
    pub async fn raw(brokers: &str, topic: &str, n: u64, headers: bool) -> Run {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("broker.address.family", "v4")
            .set("group.id", unique("raw-group"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut start = None;
        let mut cpu0 = 0.0;
        let mut done = 0;
        while done < n {
            let m = consumer.recv().await.expect("receive");
            if start.is_none() {
                start = Some(Instant::now());
                cpu0 = cpu_micros();
            }
            let item: Item = serde_json::from_slice(m.payload().unwrap_or_default()).expect("json");
            std::hint::black_box(item.id);
            if headers && let Some(hs) = m.headers() {
                std::hint::black_box(hs.iter().find(|h| h.key == "traceparent"));
            }
            consumer
                .store_offset_from_message(&m)
                .expect("store offset");
            done += 1;
        }
        let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
        let cpu = cpu_micros() - cpu0;
        Run {
            per_sec: n as f64 / elapsed.as_secs_f64(),
            cpu_per_msg: cpu / n as f64,
        }
    }

    /// The raw loop taking records in batches (`rd_kafka_consume_batch_queue`
    /// on an application queue the partition is forwarded to, up to 256 at
    /// once; when none waits, a blocking wait for one), reading each
    /// record's headers. The partition is assigned directly (forwarding must
    /// be set up before its fetch starts); the consumer's own queue is
    /// polled once per batch for its events.
    pub async fn raw_batch(brokers: &str, topic: &str, n: u64) -> Run {
        use rdkafka::bindings as rd;
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("broker.address.family", "v4")
            .set("group.id", unique("raw-group"))
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .create()
            .expect("consumer");
        let rk = consumer.client().native_ptr();
        let ctopic = std::ffi::CString::new(topic).expect("topic");
        let appq = unsafe { rd::rd_kafka_queue_new(rk) };
        unsafe {
            let partq = rd::rd_kafka_queue_get_partition(rk, ctopic.as_ptr(), 0);
            rd::rd_kafka_queue_forward(partq, appq);
            rd::rd_kafka_queue_destroy(partq);
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let mut start = None;
        let mut cpu0 = 0.0;
        let mut done = 0;
        let mut buf = vec![std::ptr::null_mut::<rd::rd_kafka_message_t>(); 256];
        while done < n {
            let mut got =
                unsafe { rd::rd_kafka_consume_batch_queue(appq, 0, buf.as_mut_ptr(), 256) };
            if got == 0 {
                got = unsafe { rd::rd_kafka_consume_batch_queue(appq, 100, buf.as_mut_ptr(), 1) };
            }
            let _ = consumer.poll(Duration::ZERO);
            for &m in &buf[..got.max(0) as usize] {
                if start.is_none() {
                    start = Some(Instant::now());
                    cpu0 = cpu_micros();
                }
                unsafe {
                    let r = &*m;
                    let payload = std::slice::from_raw_parts(r.payload as *const u8, r.len);
                    let item: Item = serde_json::from_slice(payload).expect("json");
                    std::hint::black_box(item.id);
                    let mut hdrs = std::ptr::null_mut();
                    if rd::rd_kafka_message_headers(m, &mut hdrs)
                        == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        std::hint::black_box(rd::rd_kafka_header_cnt(hdrs));
                    }
                    let e = rd::rd_kafka_offset_store_message(m);
                    if !e.is_null() {
                        rd::rd_kafka_error_destroy(e);
                    }
                    rd::rd_kafka_message_destroy(m);
                }
                done += 1;
            }
        }
        let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
        let cpu = cpu_micros() - cpu0;
        unsafe { rd::rd_kafka_queue_destroy(appq) };
        Run {
            per_sec: n as f64 / elapsed.as_secs_f64(),
            cpu_per_msg: cpu / n as f64,
        }
    }

    pub async fn patron(brokers: &str, topic: &str, n: u64) -> Run {
        let handled = Handled::new(n);
        let h = handled.clone();
        let consumer = KafkaConsumer::new(
            [topic],
            unique("patron-group"),
            handler_fn(move |msg: Message<Json<Item>>| {
                h.one();
                std::hint::black_box(msg.id);
                async { Ok::<(), patron::Error>(()) }
            }),
        )
        .brokers(brokers);
        let server = TestServer::start(
            Service::new("bench")
                .with_consumers(std::iter::empty())
                .with_component(consumer),
        )
        .await
        .expect("start");
        handled.all().await;
        let end = (Instant::now(), cpu_micros());
        server.shutdown().await.expect("shutdown");
        handled.run(end)
    }
}

/// One Kafka side at a time, for a profiler attached to this process only:
/// `kafka-fill N` prints the name of a new topic holding N records;
/// `kafka-raw TOPIC N` and `kafka-patron TOPIC N` consume it.
async fn kafka_profile(args: &[String]) {
    let brokers = std::env::var("PATRON_KAFKA_BROKERS").expect("PATRON_KAFKA_BROKERS");
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let count = |i: usize| arg(i).parse::<u64>().expect("a record count");
    let run = match arg(1) {
        "kafka-fill" => {
            println!("{}", kafka_bench::fill(&brokers, "profile", count(2)).await);
            return;
        }
        "kafka-raw" => kafka_bench::raw(&brokers, arg(2), count(3), false).await,
        "kafka-raw-headers" => kafka_bench::raw(&brokers, arg(2), count(3), true).await,
        "kafka-raw-spawned" => {
            let (brokers, topic, n) = (brokers.clone(), arg(2).to_string(), count(3));
            tokio::spawn(async move { kafka_bench::raw(&brokers, &topic, n, false).await })
                .await
                .expect("raw loop")
        }
        "kafka-patron" => kafka_bench::patron(&brokers, arg(2), count(3)).await,
        // Fill and consume in one process, as the interleaved run does:
        // reading a topic just filled is CPU-bound, not broker-bound.
        "kafka-raw-batch-fresh" => {
            let topic = kafka_bench::fill(&brokers, "profile", count(2)).await;
            kafka_bench::raw_batch(&brokers, &topic, count(2)).await
        }
        "kafka-raw-headers-fresh" => {
            let topic = kafka_bench::fill(&brokers, "profile", count(2)).await;
            kafka_bench::raw(&brokers, &topic, count(2), true).await
        }
        "kafka-patron-fresh" | "kafka-raw-fresh" => {
            let topic = kafka_bench::fill(&brokers, "profile", count(2)).await;
            if arg(1) == "kafka-raw-fresh" {
                kafka_bench::raw(&brokers, &topic, count(2), false).await
            } else {
                kafka_bench::patron(&brokers, &topic, count(2)).await
            }
        }
        other => {
            panic!(
                "unknown mode {other}: kafka-fill N | kafka-raw|kafka-raw-headers|kafka-patron TOPIC N | kafka-raw-fresh|kafka-raw-headers-fresh|kafka-raw-batch-fresh|kafka-patron-fresh N"
            )
        }
    };
    println!(
        "{}: {:.0} msg/s  {:.2} CPU µs/msg",
        arg(1),
        run.per_sec,
        run.cpu_per_msg
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A connection to RabbitMQ and a channel on it with publisher confirms.
async fn confirming_publisher(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ (PATRON_AMQP_URL)");
    let publisher = conn.create_channel().await.expect("channel");
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    (conn, publisher)
}

/// `amqp-fill QUEUE N` fills QUEUE (declared afresh) with N messages;
/// `amqp-raw QUEUE N [PREFETCH]` and `amqp-patron QUEUE N [PREFETCH]`
/// consume them, one side per process (for `scripts/bench-consumers
/// --callgrind`).
async fn amqp_profile(args: &[String]) {
    let url = std::env::var("PATRON_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let count = |i: usize| arg(i).parse::<u64>().expect("a message count");
    let prefetch: u16 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(50);
    let run = match arg(1) {
        "amqp-fill" => {
            let (conn, publisher) = confirming_publisher(&url).await;
            fill(&publisher, arg(2), count(3)).await;
            let _ = conn.close(200, "done".into()).await;
            return;
        }
        "amqp-raw" => raw(&url, arg(2), count(3), prefetch).await,
        "amqp-patron" => patron(&url, arg(2), count(3), prefetch).await,
        other => panic!("unknown mode {other}: amqp-fill|amqp-raw|amqp-patron QUEUE N [PREFETCH]"),
    };
    println!(
        "{}: {:.0} msg/s  {:.2} CPU µs/msg",
        arg(1),
        run.per_sec,
        run.cpu_per_msg
    );
}

#[tokio::main]
async fn main() {
    // Logging as a service installs it (JSON lines at INFO, `RUST_LOG`
    // honoured): without a global subscriber, tracing (built with its `log`
    // feature when sqlx is linked) evaluates every disabled span's fields
    // for the `log` crate, which a running service never does.
    let config = patron::config::Config::from_env().expect("configuration");
    let _traces = patron::observe::log::init(&config, "bench_consumers", "0").expect("logging");
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a.starts_with("kafka-")) {
        return kafka_profile(&args).await;
    }
    if args.get(1).is_some_and(|a| a.starts_with("amqp-")) {
        return amqp_profile(&args).await;
    }
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let n: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let prefetch: u16 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(50);
    let url = std::env::var("PATRON_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let (_conn, publisher) = confirming_publisher(&url).await;

    if n > 0 {
        println!("AMQP: {rounds} rounds × {n} messages, prefetch {prefetch}, concurrency 1");
    } else {
        println!("AMQP: skipped (0 messages asked)");
    }
    let (mut raw_runs, mut patron_runs) = (Series::default(), Series::default());
    for round in (1..=rounds).filter(|_| n > 0) {
        fill(&publisher, "patron-bench-raw", n).await;
        raw_runs.add(
            round,
            "raw lapin ",
            raw(&url, "patron-bench-raw", n, prefetch).await,
        );
        fill(&publisher, "patron-bench-patron", n).await;
        let p = patron(&url, "patron-bench-patron", n, prefetch).await;
        patron_runs.add(round, "patron    ", p);
    }
    for q in ["patron-bench-raw", "patron-bench-patron"] {
        let _ = publisher
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await;
    }
    let amqp_medians = (n > 0).then(|| {
        let ((rr, rc), (pr, pc)) = (raw_runs.medians(), patron_runs.medians());
        (rr, rc, pr, pc)
    });
    let sqs_n: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let sqs_medians = match std::env::var("PATRON_SQS_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() && sqs_n > 0 => {
            let client = sqs_bench::client(&endpoint);
            println!("SQS: {rounds} rounds × {sqs_n} messages at {endpoint}");
            let (mut raw_runs, mut patron_runs) = (Series::default(), Series::default());
            for round in 1..=rounds {
                let url = sqs_bench::fill(&client, "patron-bench-sqs-raw", sqs_n).await;
                raw_runs.add(
                    round,
                    "raw SQS   ",
                    sqs_bench::raw(&client, &url, sqs_n).await,
                );
                let url = sqs_bench::fill(&client, "patron-bench-sqs-patron", sqs_n).await;
                let p = sqs_bench::patron(&client, "patron-bench-sqs-patron", &url, sqs_n).await;
                patron_runs.add(round, "patron SQS", p);
            }
            let ((rr, rc), (pr, pc)) = (raw_runs.medians(), patron_runs.medians());
            Some((rr, rc, pr, pc))
        }
        _ => {
            println!("SQS: skipped (PATRON_SQS_ENDPOINT is unset or 0 messages asked)");
            None
        }
    };
    let kafka_n: u64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let kafka_medians = match std::env::var("PATRON_KAFKA_BROKERS") {
        Ok(brokers) if !brokers.is_empty() && kafka_n > 0 => {
            println!("Kafka: {rounds} rounds × {kafka_n} records at {brokers}");
            let (mut raw_runs, mut header_runs, mut batch_runs, mut patron_runs) = (
                Series::default(),
                Series::default(),
                Series::default(),
                Series::default(),
            );
            for round in 1..=rounds {
                let topic = kafka_bench::fill(&brokers, "raw", kafka_n).await;
                let r = kafka_bench::raw(&brokers, &topic, kafka_n, false).await;
                raw_runs.add(round, "raw rdkafka  ", r);
                let topic = kafka_bench::fill(&brokers, "raw-headers", kafka_n).await;
                let h = kafka_bench::raw(&brokers, &topic, kafka_n, true).await;
                header_runs.add(round, "raw + headers", h);
                let topic = kafka_bench::fill(&brokers, "raw-batch", kafka_n).await;
                let b = kafka_bench::raw_batch(&brokers, &topic, kafka_n).await;
                batch_runs.add(round, "raw batched  ", b);
                let topic = kafka_bench::fill(&brokers, "patron", kafka_n).await;
                let p = kafka_bench::patron(&brokers, &topic, kafka_n).await;
                patron_runs.add(round, "patron Kafka ", p);
            }
            let ((rr, rc), (hr, hc), (br, bc), (pr, pc)) = (
                raw_runs.medians(),
                header_runs.medians(),
                batch_runs.medians(),
                patron_runs.medians(),
            );
            println!(
                "median raw + headers: {hr:>9.0} msg/s  {hc:>6.2} CPU µs/msg (the raw loop also reading each record's headers)"
            );
            println!(
                "Kafka patron / raw + headers: {:.2}× msg/s, {:.2}× CPU per message",
                pr / hr,
                pc / hc
            );
            println!(
                "median raw batched: {br:>9.0} msg/s  {bc:>6.2} CPU µs/msg (librdkafka's batch call, as patron takes records, with headers)"
            );
            println!(
                "Kafka patron / raw batched: {:.2}× msg/s, {:.2}× CPU per message",
                pr / br,
                pc / bc
            );
            Some((rr, rc, pr, pc))
        }
        _ => {
            println!("Kafka: skipped (PATRON_KAFKA_BROKERS is unset or 0 records asked)");
            None
        }
    };
    if let Some((rr, rc, pr, pc)) = amqp_medians {
        println!("median raw lapin : {rr:>9.0} msg/s  {rc:>6.2} CPU µs/msg");
        println!("median patron    : {pr:>9.0} msg/s  {pc:>6.2} CPU µs/msg");
        println!(
            "patron / raw     : {:.2}× msg/s, {:.2}× CPU per message",
            pr / rr,
            pc / rc
        );
    }
    if let Some((rr, rc, pr, pc)) = sqs_medians {
        println!("median raw SQS   : {rr:>9.0} msg/s  {rc:>6.2} CPU µs/msg");
        println!("median patron SQS: {pr:>9.0} msg/s  {pc:>6.2} CPU µs/msg");
        println!(
            "SQS patron / raw : {:.2}× msg/s, {:.2}× CPU per message",
            pr / rr,
            pc / rc
        );
    }
    if let Some((rr, rc, pr, pc)) = kafka_medians {
        println!("median raw rdkafka  : {rr:>9.0} msg/s  {rc:>6.2} CPU µs/msg");
        println!("median patron Kafka : {pr:>9.0} msg/s  {pc:>6.2} CPU µs/msg");
        println!(
            "Kafka patron / raw  : {:.2}× msg/s, {:.2}× CPU per message",
            pr / rr,
            pc / rc
        );
    }
}
