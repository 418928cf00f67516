//! Helpers for patron's integration tests: child processes running patron
//! binaries, free ports, and polling for conditions instead of sleeping.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod amqp;
pub mod consul;
pub mod kafka;
pub mod pki;
pub mod roundtrip;
pub mod sqs;

/// The address of a test service from the environment variable `var`.
///
/// When it is unset, prints one `SKIPPED (no …)` line and returns `None` so
/// the test passes — unless `PATRON_TEST_REQUIRE_SERVICES=1`, where a
/// missing service fails the test.
pub fn service(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            if std::env::var("PATRON_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "{var} is not set, but PATRON_TEST_REQUIRE_SERVICES=1 requires {what}: run scripts/test, which starts it"
                );
            }
            println!("SKIPPED (no {what}: set {var})");
            None
        }
    }
}

/// A queue, topic or group name no other test run uses:
/// `patron-test-{prefix}-{uuid}`.
pub fn unique(prefix: &str) -> String {
    format!("patron-test-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A test service named `name` running `consumer` alone (none of the
/// `#[patron::consumer]`s linked into the test binary), with `shutdown` as
/// its shutdown timeout.
pub async fn serve_consumer(
    name: &str,
    consumer: impl patron::component::Component,
    shutdown: Duration,
) -> patron::test::TestServer {
    let mut service = patron::Service::new(name)
        .with_consumers(std::iter::empty())
        .with_component(consumer);
    service.config_mut().shutdown_timeout = shutdown;
    patron::test::TestServer::start(service)
        .await
        .expect("service starts")
}

/// Shuts `server` down and asserts it took less than `limit`: a handler
/// that never ends must not hold shutdown past the shutdown timeout.
pub async fn shuts_down_within(server: patron::test::TestServer, limit: Duration) {
    let stopping = Instant::now();
    server.shutdown().await.expect("clean shutdown");
    assert!(
        stopping.elapsed() < limit,
        "shutdown waited {:?} for a handler that never ends",
        stopping.elapsed()
    );
}

/// The `#[patron::consumer]` registered for the handler named `handler`:
/// exactly one, as a list for `Service::with_consumers`.
pub fn registered(handler: &str) -> Vec<&'static patron::ConsumerDef> {
    let defs: Vec<_> = patron::registered_consumers()
        .into_iter()
        .filter(|c| c.handler == handler)
        .collect();
    assert_eq!(defs.len(), 1, "one consumer registered for {handler}");
    defs
}

/// The component named `name` in the service's `GET /info` (at `base_url`).
pub async fn info_component(base_url: &str, name: &str) -> serde_json::Value {
    let info: serde_json::Value = reqwest::get(format!("{base_url}/info"))
        .await
        .expect("GET /info")
        .json()
        .await
        .expect("/info is JSON");
    info["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not listed in /info: {info}"))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A patron binary running as a child process; killed when dropped.
pub struct Proc {
    child: Child,
    /// Its port.
    pub port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `bin` on a free port with extra environment variables.
    pub fn spawn(bin: &str, env: &[(&str, &str)]) -> Proc {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.env_remove("RUST_LOG")
            .env("PATRON_HTTP_DEFAULT_PORT", port.to_string())
            .env("PATRON_HTTP_HOST", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for (pipe, sink) in [
            (
                Box::new(out) as Box<dyn std::io::Read + Send>,
                stdout.clone(),
            ),
            (Box::new(err), stderr.clone()),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().expect("log sink").push(line);
                }
            });
        }
        Proc {
            child,
            port,
            stdout,
            stderr,
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Waits until `/alive` answers 200.
    pub async fn wait_alive(&self) {
        let client = reqwest::Client::new();
        let url = self.url("/alive");
        let ok = eventually(Duration::from_secs(20), || {
            let req = client.get(&url).send();
            async move { matches!(req.await, Ok(r) if r.status() == 200) }
        })
        .await;
        assert!(
            ok,
            "service did not come up; stderr: {:?}; stdout: {:?}",
            self.stderr(),
            self.stdout()
        );
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of `/proc/PID/status` in kB, such as `RssAnon`.
    pub fn status_kb(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}:\n{status}"))
    }

    /// Sends a signal to the child.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) with a valid pid and signal number has no memory effects.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits for the child to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader threads a moment to drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Lines printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lines").clone()
    }

    /// Lines printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    /// Stdout lines parsed as JSON objects (non-JSON lines are skipped).
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reading the Prometheus text exposition format in tests.
pub mod prom {
    use std::collections::BTreeMap;

    /// One sample: metric name, labels, value.
    pub type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the text exposition format (comments skipped).
    pub fn parse(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = BTreeMap::new();
                    for pair in rest.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").expect("label pair");
                        labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            out.push((name, labels, value));
        }
        out
    }

    /// The first sample of `name` whose labels include `labels`.
    pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    /// A sample of the process-wide registry, where clients record their
    /// metrics; 0 when there is none yet.
    pub fn global(name: &str, labels: &[(&str, &str)]) -> f64 {
        value(
            &parse(&patron::observe::metrics::global().render()),
            name,
            labels,
        )
        .unwrap_or(0.0)
    }

    /// A sample of `server`'s `/metrics`; 0 when there is none yet.
    pub async fn metric(
        server: &patron::test::TestServer,
        name: &str,
        labels: &[(&str, &str)],
    ) -> f64 {
        let samples = scrape(&reqwest::Client::new(), &server.url("/metrics")).await;
        value(&samples, name, labels).unwrap_or(0.0)
    }

    /// Fetches `url` (a `/metrics` endpoint), checks status and media type,
    /// and parses it.
    pub async fn scrape(client: &reqwest::Client, url: &str) -> Vec<Sample> {
        let resp = client.get(url).send().await.expect("scrape");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        parse(&resp.text().await.expect("metrics body"))
    }
}

/// An OTLP/HTTP trace receiver for tests: it decodes `/v1/traces` with
/// `opentelemetry-proto`.
pub mod otlp {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::routing::post;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    /// Every export request received.
    pub type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

    /// An OTLP/HTTP trace receiver on a free port; returns its base URL.
    pub async fn receiver() -> (String, Received) {
        let received: Received = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    sink.lock().unwrap().push(request);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, received)
    }

    pub fn spans(received: &Received) -> Vec<(Span, Vec<KeyValue>)> {
        let mut out = Vec::new();
        for req in received.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((span.clone(), resource.clone()));
                    }
                }
            }
        }
        out
    }

    pub fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v: &AnyValue| v.value.as_ref())
    }

    pub fn string(attrs: &[KeyValue], key: &str) -> Option<String> {
        match attr(attrs, key) {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    }
}
