//! In-process service lifecycle: component failure stops the service and is
//! reported, every component (the HTTP server among them) sees draining then
//! shutdown, and the connection timeouts close idle and silent connections.

use std::time::{Duration, Instant};

use patron::prelude::*;
use patron::test::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[patron::route(GET "/ping")]
async fn ping() -> &'static str {
    "pong"
}

struct Failing;

impl Component for Failing {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::new("test", "failing")
    }
    async fn run(self, _ctx: ComponentContext) -> patron::Result<()> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Err(patron::Error::msg("lost the broker for good"))
    }
}

struct Observer(tokio::sync::oneshot::Sender<()>);

impl Component for Observer {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::new("test", "observer")
    }
    async fn run(self, ctx: ComponentContext) -> patron::Result<()> {
        ctx.shutdown().cancelled().await;
        let _ = self.0.send(());
        Err(patron::Error::msg("observer also failed on the way out"))
    }
}

#[tokio::test]
async fn a_failing_component_stops_the_service_and_all_errors_are_reported() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let svc = Service::new("failing")
        .with_component(Failing)
        .with_component(Observer(tx));
    let server = TestServer::start(svc).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), server.join())
        .await
        .expect("service stops by itself")
        .expect_err("the failure is reported");
    let text = err.to_string();
    assert!(text.contains("failing: lost the broker for good"), "{text}");
    assert!(
        text.contains("observer: observer also failed on the way out"),
        "{text}"
    );
    rx.await
        .expect("the other component got the shutdown signal");
}

/// Reports when it saw the service start draining and when it was told to
/// stop.
struct Phases(tokio::sync::mpsc::UnboundedSender<(&'static str, Instant)>);

impl Component for Phases {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::new("test", "phases")
    }
    async fn run(self, ctx: ComponentContext) -> patron::Result<()> {
        ctx.draining().cancelled().await;
        let _ = self.0.send(("draining", Instant::now()));
        ctx.shutdown().cancelled().await;
        let _ = self.0.send(("shutdown", Instant::now()));
        Ok(())
    }
}

#[tokio::test]
async fn the_http_server_is_a_component_and_every_component_sees_draining_before_shutdown() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut svc = Service::new("phases").with_component(Phases(tx));
    svc.config_mut().shutdown_delay = Duration::from_millis(400);
    let server = TestServer::start(svc).await.unwrap();
    let info: serde_json::Value = server.get("/info").await.unwrap().json().unwrap();
    let kinds: Vec<&str> = info["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["http", "test"], "{info}");
    let ready: serde_json::Value = server.get("/ready").await.unwrap().json().unwrap();
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["component:http", "component:phases"], "{ready}");

    server.begin_shutdown();
    let (phase, drained_at) = rx.recv().await.unwrap();
    assert_eq!(phase, "draining");
    // Between the two: `/ready` says 503 while routes still answer.
    let ready = server.get("/ready").await.unwrap();
    assert_eq!(ready.status(), 503);
    let ping = server.get("/ping").await.unwrap();
    assert_eq!(ping.text(), "pong");
    let (phase, stopped_at) = rx.recv().await.unwrap();
    assert_eq!(phase, "shutdown");
    let delay = stopped_at - drained_at;
    assert!(delay >= Duration::from_millis(350), "{delay:?}");
    server.join().await.unwrap();
}

#[tokio::test]
async fn start_up_errors_come_before_binding() {
    // An empty route set and no component: nothing to run.
    let err = Service::new("empty")
        .with_routes([])
        .bind()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("linker may have dropped them"),
        "{err}"
    );
}

async fn server_with(idle: Duration, read: Duration) -> TestServer {
    let mut svc = Service::new("timeouts");
    svc.config_mut().http_idle_timeout = idle;
    svc.config_mut().http_read_timeout = read;
    TestServer::start(svc).await.unwrap()
}

async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = server_with(Duration::from_millis(400), Duration::from_secs(30)).await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("idle connection closed");
    assert!(
        closed >= Duration::from_millis(300),
        "closed too early: {closed:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn silent_and_slow_header_connections_hit_the_read_timeout() {
    let server = server_with(Duration::from_secs(60), Duration::from_millis(400)).await;
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5))
            .await
            .is_some(),
        "silent connection kept open"
    );

    let mut slow = TcpStream::connect(server.addr()).await.unwrap();
    slow.write_all(b"GET /ping HTTP/1.1\r\n").await.unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5))
            .await
            .is_some(),
        "slow-header connection kept open"
    );
    server.shutdown().await.unwrap();
}
