//! `client::redis::Redis` against the machine's real Redis
//! (`PATRON_TEST_REDIS_URL`): commands through redis-rs's API with spans
//! and the duration histogram, errors counted, readiness on `/ready`, and a
//! connection cut under it (a TCP relay the test stops and restarts)
//! failing commands and `/ready` until it is back, then recovering on its
//! own.

use std::sync::Arc;
use std::time::Duration;

use patron::client::redis::{AsyncCommands, Redis};
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::{eventually, prom, unique};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

fn redis_url() -> Option<String> {
    patron_tests::service("PATRON_TEST_REDIS_URL", "Redis")
}

/// A route using the client, as a service would.
#[patron::route(GET "/visits/{key}")]
async fn visits(Path(key): Path<String>, redis: Dep<Redis>) -> Result<String, patron::Error> {
    let mut conn = (*redis).clone();
    let n: i64 = conn
        .incr(&key, 1)
        .await
        .map_err(|e| patron::Error::unavailable(e.to_string()))?;
    Ok(n.to_string())
}

fn count(command: &str, outcome: &str) -> f64 {
    prom::global(
        "redis_client_command_duration_seconds_count",
        &[("command", command), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_with_spans_and_metrics_and_errors_are_counted() {
    let Some(url) = redis_url() else { return };
    let redis = Redis::new(&url).unwrap();
    let mut conn = redis.clone();
    let key = unique("redis");
    let (sets, gets, errors) = (
        count("SET", "ok"),
        count("GET", "ok"),
        count("INCRBY", "error"),
    );

    let () = conn.set_ex(&key, "v1", 60).await.unwrap();
    let got: String = conn.get(&key).await.unwrap();
    assert_eq!(got, "v1");
    // A server error: INCRBY (what `incr` sends) on a non-number.
    let err = conn.incr::<_, _, i64>(&key, 1).await.unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    let values: (i64, i64) = redis::pipe()
        .incr(format!("{key}-n"), 2)
        .incr(format!("{key}-n"), 3)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(values, (2, 5));
    let _: () = conn.del(&[&key, &format!("{key}-n")]).await.unwrap();

    assert_eq!(count("SETEX", "ok") + count("SET", "ok") - sets, 1.0);
    assert_eq!(count("GET", "ok") - gets, 1.0);
    assert_eq!(count("INCRBY", "error") - errors, 1.0);
    assert!(count("PIPELINE", "ok") >= 1.0);
}

/// A TCP relay to Redis that the test can cut and bring back on one port.
struct Relay {
    port: u16,
    target: String,
    /// The accepting task.
    tasks: Option<JoinSet<()>>,
    /// One task per relayed connection.
    conns: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut relay = Relay {
            port,
            target,
            tasks: None,
            conns: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let target = self.target.clone();
        let conns = Arc::clone(&self.conns);
        tasks.spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                conns.lock().await.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every relayed connection, and returns once
    /// their tasks are gone: dropping a `JoinSet` only asks its tasks to
    /// stop, and a relay still running after the cut would answer.
    async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
        self.conns.lock().await.shutdown().await;
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_fails_readiness_and_recovers_on_its_own() {
    let Some(url) = redis_url() else { return };
    let target = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let mut relay = Relay::start(target).await;
    let redis = Redis::new(&format!("redis://127.0.0.1:{}", relay.port)).unwrap();
    let server = TestServer::start(Service::new("redis").with_client(redis.clone()))
        .await
        .unwrap();
    let key = unique("redis-relay");
    let mut conn = redis.clone();
    let () = conn.set_ex(&key, "1", 60).await.unwrap();
    assert_eq!(server.get("/ready").await.unwrap().status(), 200);

    relay.cut().await;
    let failed = conn.get::<_, Option<String>>(&key).await;
    assert!(
        failed.is_err(),
        "a command on a cut connection fails: {failed:?}"
    );
    let ready = server.get("/ready").await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        ready.text().contains("Redis at 127.0.0.1"),
        "{}",
        ready.text()
    );

    relay.restore().await;
    let back = eventually(Duration::from_secs(10), || {
        let mut conn = redis.clone();
        let key = key.clone();
        async move { conn.get::<_, Option<String>>(&key).await.ok() == Some(Some("1".to_string())) }
    })
    .await;
    assert!(back, "the client reconnects on its own");
    assert_eq!(server.get("/ready").await.unwrap().status(), 200);
    let visits_key = format!("{key}-visits");
    assert_eq!(
        server
            .get(&format!("/visits/{visits_key}"))
            .await
            .unwrap()
            .text(),
        "1"
    );
    assert_eq!(
        server
            .get(&format!("/visits/{visits_key}"))
            .await
            .unwrap()
            .text(),
        "2"
    );
    let _: () = conn.del(&[&key, &visits_key]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_readiness_naming_it() {
    let port = patron_tests::free_port();
    let redis = Redis::new(&format!("redis://127.0.0.1:{port}")).unwrap();
    let server = TestServer::start(Service::new("redis-down").with_client(redis))
        .await
        .unwrap();
    let ready = server.get("/ready").await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text();
    assert!(body.contains("\"redis\""), "{body}");
    assert!(body.contains(&format!("127.0.0.1:{port}")), "{body}");
}
