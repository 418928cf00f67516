//! The greeter example's gRPC server against a client patron did not
//! write: Python's grpcio (with grpcio-health-checking and
//! grpcio-reflection), run by `tests/grpc/client.py`. Unary and streaming
//! calls, a missing API key, an expired deadline, health `Check` and
//! `Watch` across a SIGTERM, reflection, the exported span continuing the
//! caller's traceparent, and TLS and mutual TLS (with `openssl s_client`
//! checking ALPN on the gRPC port and a certificate rotated on SIGHUP).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use patron_tests::otlp::{hex, receiver, spans, string};
use patron_tests::pki::Pki;
use patron_tests::{Proc, eventually, free_port};
use serde_json::Value;

const GREETER: &str = env!("CARGO_BIN_EXE_greeter");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn python() -> Option<String> {
    patron_tests::service("PATRON_TEST_GRPC_PYTHON", "Python with grpcio")
}

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("grpc/client.py")
        .display()
        .to_string()
}

/// Runs a client scenario to its end: its JSON lines.
fn client(python: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(python)
        .arg(script())
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "client.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn find<'a>(lines: &'a [Value], kind: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line in {lines:#?}"))
}

/// The greeter on free ports, with `env` added.
async fn greeter(env: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut all = vec![
        ("PATRON_GRPC_PORT", port_text.as_str()),
        ("PATRON_API_KEYS", "k1"),
    ];
    all.extend_from_slice(env);
    let proc = Proc::spawn(GREETER, &all);
    proc.wait_alive().await;
    (proc, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_every_kind_and_the_span_continues_its_trace() {
    let Some(py) = python() else { return };
    let (endpoint, received) = receiver().await;
    let (proc, port) = greeter(&[
        ("PATRON_GRPC_REFLECTION", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let addr = format!("127.0.0.1:{port}");
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let lines = tokio::task::spawn_blocking({
        let (py, addr) = (py.clone(), addr.clone());
        move || {
            client(
                &py,
                &[&addr, "calls", "--key", "k1", "--traceparent", &traceparent],
            )
        }
    })
    .await
    .unwrap();

    let unary = find(&lines, "unary");
    assert_eq!(unary["message"], "Hello, Ada!");
    assert_eq!(unary["correlation_id"], "py-corr-1");
    assert_eq!(
        unary["echoed"], "py-corr-1",
        "echoed in the response metadata"
    );
    for line in lines.iter().filter(|l| l["kind"] == "auth") {
        assert_eq!(line["code"], "UNAUTHENTICATED", "{line}");
    }
    assert_eq!(find(&lines, "invalid")["code"], "INVALID_ARGUMENT");
    assert_eq!(
        find(&lines, "server_stream")["ticks"],
        serde_json::json!([2, 1, 0])
    );
    let sum = find(&lines, "client_stream");
    assert_eq!(
        (sum["total"].as_i64(), sum["count"].as_i64()),
        (Some(42), Some(3))
    );
    assert_eq!(
        find(&lines, "bidi")["replies"],
        serde_json::json!(["Hello, Ada!", "Hello, Grace!"])
    );
    let deadline = find(&lines, "deadline");
    assert_eq!(deadline["code"], "DEADLINE_EXCEEDED");
    assert!(
        deadline["ticks"].as_array().unwrap().len() < 10,
        "{deadline}"
    );
    for line in lines.iter().filter(|l| l["kind"] == "health") {
        assert_eq!(line["status"], "SERVING", "{line}");
    }
    assert_eq!(find(&lines, "health_unknown")["code"], "NOT_FOUND");

    let reflected = tokio::task::spawn_blocking(move || client(&py, &[&addr, "reflection"]))
        .await
        .unwrap();
    assert_eq!(
        find(&reflected, "reflection")["services"],
        serde_json::json!([
            "greeter.v1.Greeter",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ])
    );

    // The handler's log line carries the caller's correlation id.
    let logged = eventually(Duration::from_secs(5), || {
        let found = proc.json_logs().iter().any(|l| l["message"] == "greeted");
        async move { found }
    })
    .await;
    assert!(logged, "{:?}", proc.stdout());
    let logs = proc.json_logs();
    let greeted = logs
        .iter()
        .find(|l| l["message"] == "greeted")
        .expect("the handler's log line");
    assert_eq!(greeted["correlation_id"], "py-corr-1");
    assert_eq!(greeted["trace_id"], TRACE_ID);

    // The exported server span continues the caller's trace.
    let arrived = eventually(Duration::from_secs(10), || {
        let found = spans(&received)
            .iter()
            .any(|(s, _)| s.name == "greeter.v1.Greeter/SayHello");
        async move { found }
    })
    .await;
    assert!(arrived, "no gRPC span exported; stderr {:?}", proc.stderr());
    let all = spans(&received);
    let (span, _) = all
        .iter()
        .find(|(s, _)| s.name == "greeter.v1.Greeter/SayHello" && hex(&s.trace_id) == TRACE_ID)
        .expect("the SayHello span in the caller's trace");
    assert_eq!(hex(&span.parent_span_id), PARENT_ID);
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        string(&span.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string(&span.attributes, "rpc.service").as_deref(),
        Some("greeter.v1.Greeter")
    );
    assert_eq!(
        string(&span.attributes, "rpc.method").as_deref(),
        Some("SayHello")
    );
    assert_eq!(
        string(&span.attributes, "correlation_id").as_deref(),
        Some("py-corr-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_watch_sees_not_serving_after_sigterm_then_unavailable() {
    let Some(py) = python() else { return };
    let (mut proc, port) = greeter(&[("PATRON_SHUTDOWN_DELAY", "500ms")]).await;
    let mut watch = Command::new(&py)
        .arg(script())
        .args([&format!("127.0.0.1:{port}"), "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python runs");
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = watch.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).expect("JSON line"));
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("no {what} from the watch: {e}"))
    };
    assert_eq!(next("first status")["status"], "SERVING");
    proc.signal(libc::SIGTERM);
    assert_eq!(next("status after SIGTERM")["status"], "NOT_SERVING");
    let end = next("the end of the watch");
    assert_eq!(end["kind"], "watch_end");
    assert_eq!(end["code"], "UNAVAILABLE", "{end}");
    assert_eq!(
        proc.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{:?}",
        proc.stdout()
    );
    let _ = watch.wait();
}

/// `openssl s_client` on `port`: (the ALPN protocol, the subject line).
fn handshake(port: u16, ca: &Path) -> (String, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-servername",
            "localhost",
            "-alpn",
            "h2,http/1.1",
            "-CAfile",
        ])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or("none")
            .to_string()
    };
    (line("ALPN protocol: "), line("subject="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_over_tls_and_mutual_tls() {
    let Some(py) = python() else { return };
    let pki = Pki::new();
    let server = pki.files("server", false);
    let (cert, key) = (
        server.cert.display().to_string(),
        server.key.display().to_string(),
    );
    let ca = pki.path("ca.pem").display().to_string();

    // TLS: grpcio trusts the test CA; openssl sees h2 chosen by ALPN.
    let (proc, port) = greeter(&[
        ("PATRON_GRPC_TLS_CERT", &cert),
        ("PATRON_GRPC_TLS_KEY", &key),
    ])
    .await;
    let addr = format!("localhost:{port}");
    let lines = tokio::task::spawn_blocking({
        let (py, addr, ca) = (py.clone(), addr.clone(), ca.clone());
        move || client(&py, &[&addr, "unary", "--key", "k1", "--ca", &ca])
    })
    .await
    .unwrap();
    assert_eq!(find(&lines, "unary")["message"], "Hello, TLS!");
    let ca_path = pki.path("ca.pem");
    let (chosen, subject) = tokio::task::spawn_blocking({
        let ca_path = ca_path.clone();
        move || handshake(port, &ca_path)
    })
    .await
    .unwrap();
    assert_eq!(chosen, "h2");
    assert!(
        subject.contains("CN=server") || subject.contains("CN = server"),
        "{subject}"
    );
    // A rotated certificate is served to new handshakes after SIGHUP.
    pki.issue("server", "rotated");
    proc.signal(libc::SIGHUP);
    let rotated = eventually(Duration::from_secs(5), || {
        let ca_path = ca_path.clone();
        async move {
            let (_, subject) = tokio::task::spawn_blocking(move || handshake(port, &ca_path))
                .await
                .unwrap();
            subject.contains("rotated")
        }
    })
    .await;
    assert!(
        rotated,
        "the gRPC server did not take the rotated certificate"
    );
    let info: Value = reqwest::get(proc.url("/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grpc = info["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "grpc")
        .cloned()
        .unwrap();
    assert_eq!(grpc["details"]["tls"], "on");
    drop(proc);

    // Mutual TLS: a client without a certificate is refused; one with a
    // certificate from the CA gets through.
    let (_proc, port) = greeter(&[
        ("PATRON_GRPC_TLS_CERT", &cert),
        ("PATRON_GRPC_TLS_KEY", &key),
        ("PATRON_GRPC_TLS_CLIENT_CA", &ca),
    ])
    .await;
    let addr = format!("localhost:{port}");
    let (client_cert, client_key) = pki.issue("client", "client");
    let (client_cert, client_key) = (
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    let lines = tokio::task::spawn_blocking({
        let (py, addr, ca) = (py.clone(), addr.clone(), ca.clone());
        move || client(&py, &[&addr, "unary", "--key", "k1", "--ca", &ca])
    })
    .await
    .unwrap();
    assert_eq!(
        find(&lines, "unary")["code"],
        "UNAVAILABLE",
        "no client certificate: refused"
    );
    let lines = tokio::task::spawn_blocking(move || {
        client(
            &py,
            &[
                &addr,
                "unary",
                "--key",
                "k1",
                "--ca",
                &ca,
                "--cert",
                &client_cert,
                "--key-file",
                &client_key,
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(find(&lines, "unary")["message"], "Hello, TLS!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_http_gateway_through_the_grpc_client_to_the_server() {
    let (endpoint, received) = receiver().await;
    let (proc, _port) = greeter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let reply: Value = reqwest::Client::new()
        .get(proc.url("/hello/Ada"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-correlation-id", "gw-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["message"], "Hello, Ada!");
    assert_eq!(
        reply["correlation_id"], "gw-1",
        "the gRPC call ran under the HTTP request's id"
    );
    let complete = eventually(Duration::from_secs(10), || {
        let n = spans(&received)
            .iter()
            .filter(|(s, _)| hex(&s.trace_id) == TRACE_ID)
            .count();
        async move { n >= 3 }
    })
    .await;
    assert!(
        complete,
        "spans: {:?}",
        spans(&received)
            .iter()
            .map(|(s, _)| s.name.clone())
            .collect::<Vec<_>>()
    );
    let all = spans(&received);
    let in_trace: Vec<_> = all
        .iter()
        .map(|(s, _)| s)
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    let http = in_trace
        .iter()
        .find(|s| s.name == "GET /hello/{name}")
        .expect("the HTTP server span");
    let client = in_trace
        .iter()
        .find(|s| s.name == "greeter.v1.Greeter/SayHello" && s.kind == 3)
        .expect("the gRPC client span");
    let server = in_trace
        .iter()
        .find(|s| s.name == "greeter.v1.Greeter/SayHello" && s.kind == 2)
        .expect("the gRPC server span");
    assert_eq!(hex(&http.parent_span_id), PARENT_ID);
    assert_eq!(
        client.parent_span_id, http.span_id,
        "the client span is the HTTP span's child"
    );
    assert_eq!(
        server.parent_span_id, client.span_id,
        "the server span is the client span's child"
    );
    assert_eq!(
        string(&client.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert!(
        string(&client.attributes, "server.address").is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
}
