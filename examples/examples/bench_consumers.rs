//! Consumer overhead benchmark (run by `scripts/bench-consumers`): the same
//! RabbitMQ queue depth consumed by a raw lapin loop (prefetch P, manual
//! ack of each message) and by a patron AMQP consumer (same prefetch,
//! concurrency 1, a handler that decodes JSON and returns `Ok`), in one
//! process, interleaved A B A B.
//!
//! Each run pre-fills its own queue with N messages, then times the
//! consumption from the first delivery to the N-th acknowledgement, and
//! reads the process's CPU time (user + system, `/proc/self/stat`) over the
//! same window. Prints messages/s and CPU µs/message per run, then the
//! medians and the ratios patron / raw.
//!
//! Usage: `bench_consumers [rounds (3)] [messages (20000)] [prefetch (50)]`,
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
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1e6 / hz
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
    let handled = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::Mutex::new(None::<(Instant, f64)>));
    let (h, f) = (handled.clone(), first.clone());
    let consumer = AmqpConsumer::new(
        queue,
        handler_fn(move |msg: Message<Json<Item>>| {
            if h.fetch_add(1, Ordering::Relaxed) == 0 {
                *f.lock().unwrap() = Some((Instant::now(), cpu_micros()));
            }
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
    while handled.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let end = (Instant::now(), cpu_micros());
    let (t0, cpu0) = first.lock().unwrap().expect("a message was handled");
    server.shutdown().await.expect("shutdown");
    Run {
        per_sec: n as f64 / (end.0 - t0).as_secs_f64(),
        cpu_per_msg: (end.1 - cpu0) / n as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let n: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let prefetch: u16 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(50);
    let url = std::env::var("PATRON_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ (PATRON_AMQP_URL)");
    let publisher = conn.create_channel().await.expect("channel");
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");

    println!("{rounds} rounds × {n} messages, prefetch {prefetch}, concurrency 1");
    let (mut raw_rate, mut raw_cpu, mut pat_rate, mut pat_cpu) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        fill(&publisher, "patron-bench-raw", n).await;
        let r = raw(&url, "patron-bench-raw", n, prefetch).await;
        println!(
            "round {round} raw lapin : {:>9.0} msg/s  {:>6.2} CPU µs/msg",
            r.per_sec, r.cpu_per_msg
        );
        raw_rate.push(r.per_sec);
        raw_cpu.push(r.cpu_per_msg);
        fill(&publisher, "patron-bench-patron", n).await;
        let p = patron(&url, "patron-bench-patron", n, prefetch).await;
        println!(
            "round {round} patron    : {:>9.0} msg/s  {:>6.2} CPU µs/msg",
            p.per_sec, p.cpu_per_msg
        );
        pat_rate.push(p.per_sec);
        pat_cpu.push(p.cpu_per_msg);
    }
    for q in ["patron-bench-raw", "patron-bench-patron"] {
        let _ = publisher
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await;
    }
    let (rr, rc, pr, pc) = (
        median(raw_rate),
        median(raw_cpu),
        median(pat_rate),
        median(pat_cpu),
    );
    println!("median raw lapin : {rr:>9.0} msg/s  {rc:>6.2} CPU µs/msg");
    println!("median patron    : {pr:>9.0} msg/s  {pc:>6.2} CPU µs/msg");
    println!(
        "patron / raw     : {:.2}× msg/s, {:.2}× CPU per message",
        pr / rr,
        pc / rc
    );
}
