//! HTTP behaviour over real TCP: built-in routes, auth, middleware order,
//! correlation ids, problem bodies and the handler-as-function guarantee.
//! Every test starts its own in-process service on a free port.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use patron::prelude::*;
use patron::test::TestServer;
use serde_json::{Value, json};

const KEY: &str = "test-key";

#[derive(Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
struct Payload {
    name: String,
    count: u32,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Search {
    q: String,
    limit: u32,
}

struct Counter(AtomicUsize);

static SECURE_MIDDLEWARE_CALLS: AtomicUsize = AtomicUsize::new(0);

fn append(req: &mut Request, name: &str) {
    let current = req
        .headers()
        .get("x-order")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let next = if current.is_empty() {
        name.to_string()
    } else {
        format!("{current},{name}")
    };
    req.headers_mut()
        .insert("x-order", http::HeaderValue::from_str(&next).unwrap());
}

async fn global_mw(mut req: Request, next: Next) -> Response {
    append(&mut req, "global");
    next.run(req).await
}

async fn mw_a(mut req: Request, next: Next) -> Response {
    append(&mut req, "a");
    next.run(req).await
}

async fn mw_b(mut req: Request, next: Next) -> Response {
    append(&mut req, "b");
    next.run(req).await
}

async fn mw_count(req: Request, next: Next) -> Response {
    SECURE_MIDDLEWARE_CALLS.fetch_add(1, Ordering::SeqCst);
    next.run(req).await
}

fn order_of(headers: &HeaderMap) -> String {
    headers
        .get("x-order")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[patron::route(GET "/hello")]
async fn hello() -> &'static str {
    "hello"
}

#[patron::route(POST "/echo")]
async fn echo(Json(p): Json<Payload>) -> Json<Payload> {
    Json(p)
}

#[patron::route(GET "/items/{id}")]
async fn item(Path(id): Path<u32>) -> String {
    format!("item {id}")
}

#[patron::route(GET "/search")]
async fn search(Query(s): Query<Search>) -> String {
    format!("{} x{}", s.q, s.limit)
}

#[patron::route(GET "/order", middleware = [mw_a, mw_b])]
async fn order(headers: HeaderMap) -> String {
    order_of(&headers)
}

#[patron::route(GET "/secure", auth = ApiKey, middleware = [mw_count, mw_a])]
async fn secure(headers: HeaderMap) -> String {
    order_of(&headers)
}

/// An authenticator whose backend is down: every decision is an error.
struct Unreachable;

impl Authenticator for Unreachable {
    async fn authenticate(&self, _: &http::request::Parts) -> patron::Result<bool> {
        Err(patron::Error::msg("identity provider timed out"))
    }
}

#[patron::route(GET "/guarded", auth = Unreachable)]
async fn guarded() -> &'static str {
    "never"
}

#[patron::route(GET "/panic")]
async fn panics() -> &'static str {
    panic!("handler exploded on purpose")
}

#[patron::route(GET "/fail")]
async fn fail() -> Result<String, patron::Error> {
    let io = std::io::Error::other("database password is hunter2");
    Err(io)?
}

#[patron::route(DELETE "/things/{id}")]
async fn delete_thing(Path(id): Path<u32>) -> Result<StatusCode, patron::Error> {
    Err(patron::Error::conflict(format!("thing {id} is in use")).with_extension("thing", id))
}

#[patron::route(GET "/slow", timeout = "100ms")]
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "too late"
}

#[patron::route(POST "/upload", timeout = "300ms")]
async fn upload(body: String) -> String {
    body
}

#[patron::route(POST "/small", body_limit = "16B")]
async fn small(body: String) -> String {
    body
}

#[patron::route(GET "/cid")]
async fn cid(id: CorrelationId) -> String {
    id.as_str().to_string()
}

#[patron::route(GET "/count")]
async fn count(counter: Dep<Counter>) -> String {
    (counter.0.fetch_add(1, Ordering::SeqCst) + 1).to_string()
}

#[patron::route(GET "/propagate")]
async fn propagate() -> Json<Value> {
    let mut headers = HeaderMap::new();
    patron::observe::trace::inject(&mut headers);
    let pairs = headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap())));
    Json(Value::Object(pairs.collect()))
}

#[patron::route(GET "/untraced", trace = false)]
async fn untraced() -> &'static str {
    "no span"
}

fn service() -> Service {
    Service::new("http-tests")
        .version("1.2.3")
        .provide(ApiKey::new([KEY]))
        .provide(Counter(AtomicUsize::new(0)))
        .provide(Unreachable)
        .with_middleware(axum::middleware::from_fn(global_mw))
}

async fn start() -> (TestServer, reqwest::Client) {
    let server = TestServer::start(service()).await.expect("service starts");
    (server, reqwest::Client::new())
}

async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("request sent")
        .text()
        .await
        .expect("body read")
}

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "status {status} must come as a problem body"
    );
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn built_in_routes() {
    let (server, client) = start().await;

    let alive = client.get(server.url("/alive")).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    assert_eq!(
        alive.json::<Value>().await.unwrap(),
        json!({"status": "alive"})
    );

    let ready = client.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");

    let info: Value = client
        .get(server.url("/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["name"], "http-tests");
    assert_eq!(info["version"], "1.2.3");
    let routes = info["routes"].as_array().unwrap();
    let secure = routes
        .iter()
        .find(|r| r["path"] == "/secure")
        .expect("/secure listed");
    assert_eq!(secure["method"], "GET");
    assert_eq!(secure["auth"], "ApiKey");
    assert_eq!(secure["middleware"], json!(["mw_count", "mw_a"]));
    assert!(
        secure["location"]
            .as_str()
            .unwrap()
            .starts_with("tests/tests/http.rs:"),
        "{secure}"
    );
    assert_eq!(info["components"][0]["kind"], "http");

    // Management routes carry no correlation id: they skip the request middleware.
    let alive = client.get(server.url("/alive")).send().await.unwrap();
    assert!(alive.headers().get("x-correlation-id").is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ready_reports_failing_checks_and_components() {
    struct Stalled;
    impl Component for Stalled {
        fn info(&self) -> ComponentInfo {
            ComponentInfo::new("test", "stalled")
        }
        async fn run(self, ctx: ComponentContext) -> patron::Result<()> {
            ctx.readiness().not_ready("broker unreachable");
            ctx.shutdown().cancelled().await;
            Ok(())
        }
    }
    let svc = service()
        .with_health_check("db", || async { Err::<(), _>("connection refused") })
        .with_health_check("cache", || async { Ok::<(), String>(()) })
        .with_component(Stalled);
    let server = TestServer::start(svc).await.unwrap();
    let client = reqwest::Client::new();
    let url = server.url("/ready");
    let ok = patron_tests::eventually(Duration::from_secs(5), || {
        let r = client.get(&url).send();
        async move { r.await.map(|r| r.status() == 503).unwrap_or(false) }
    })
    .await;
    assert!(ok);
    let body = problem(client.get(&url).send().await.unwrap(), 503).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("db") && detail.contains("component:stalled"),
        "{detail}"
    );
    assert!(!detail.contains("cache"), "{detail}");
    let checks = body["checks"].as_array().unwrap();
    let db = checks.iter().find(|c| c["name"] == "db").unwrap();
    assert_eq!(db["error"], "connection refused");
    let info: Value = client
        .get(server.url("/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["components"][1]["name"], "stalled");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn handlers_extract_and_respond() {
    let (server, client) = start().await;
    assert_eq!(get_text(&client, &server.url("/hello")).await, "hello");
    let echoed: Payload = client
        .post(server.url("/echo"))
        .json(&json!({"name": "x", "count": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        echoed,
        Payload {
            name: "x".into(),
            count: 3
        }
    );
    assert_eq!(get_text(&client, &server.url("/items/42")).await, "item 42");
    assert_eq!(
        get_text(&client, &server.url("/search?q=tea&limit=2")).await,
        "tea x2"
    );
    assert_eq!(get_text(&client, &server.url("/count")).await, "1");
    assert_eq!(get_text(&client, &server.url("/count")).await, "2");
    assert_eq!(get_text(&client, &server.url("/untraced")).await, "no span");
    // HEAD is served by the GET handler.
    let head = client.head(server.url("/hello")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn auth_passes_and_fails_before_route_middleware() {
    let (server, client) = start().await;
    let before = SECURE_MIDDLEWARE_CALLS.load(Ordering::SeqCst);

    let denied = client.get(server.url("/secure")).send().await.unwrap();
    assert_eq!(denied.headers().get("www-authenticate").unwrap(), "Apikey");
    problem(denied, 401).await;
    let wrong = client
        .get(server.url("/secure"))
        .header("authorization", "Apikey nope")
        .send()
        .await
        .unwrap();
    problem(wrong, 401).await;
    let bearer = client
        .get(server.url("/secure"))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    problem(bearer, 401).await;
    assert_eq!(
        SECURE_MIDDLEWARE_CALLS.load(Ordering::SeqCst),
        before,
        "route middleware ran for a refused request"
    );

    let allowed = client
        .get(server.url("/secure"))
        .header("authorization", format!("apiKEY {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.text().await.unwrap(), "global,a");
    assert_eq!(SECURE_MIDDLEWARE_CALLS.load(Ordering::SeqCst), before + 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn middleware_runs_global_first_then_route_in_listed_order() {
    let (server, client) = start().await;
    let text = get_text(&client, &server.url("/order")).await;
    assert_eq!(text, "global,a,b");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn correlation_id_is_generated_and_propagated() {
    let (server, client) = start().await;
    let given = client
        .get(server.url("/cid"))
        .header("x-correlation-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers().get("x-correlation-id").unwrap(), "req-123");
    assert_eq!(given.text().await.unwrap(), "req-123");

    let generated = client.get(server.url("/cid")).send().await.unwrap();
    let header = generated
        .headers()
        .get("x-correlation-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body = generated.text().await.unwrap();
    assert_eq!(header, body, "the handler sees the id the response carries");
    let parsed = header.split('-').map(str::len).collect::<Vec<_>>();
    assert_eq!(parsed, vec![8, 4, 4, 4, 12], "a UUID: {header}");
    assert_eq!(&header[14..15], "4", "a version-4 UUID: {header}");

    let other = get_text(&client, &server.url("/cid")).await;
    assert_ne!(other, header, "each request gets its own id");

    // An unusable id (control characters are impossible in reqwest; use an overlong one) is replaced.
    let long = "x".repeat(300);
    let replaced = client
        .get(server.url("/cid"))
        .header("x-correlation-id", &long)
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.text().await.unwrap().len(), 36);

    // Error responses carry it too.
    let err = client
        .get(server.url("/fail"))
        .header("x-correlation-id", "err-1")
        .send()
        .await
        .unwrap();
    assert_eq!(err.headers().get("x-correlation-id").unwrap(), "err-1");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn problem_bodies_for_client_errors() {
    let (server, client) = start().await;

    let malformed = client
        .post(server.url("/echo"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let body = problem(malformed, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("JSON"), "{body}");

    let wrong_shape = client
        .post(server.url("/echo"))
        .json(&json!({"name": 1}))
        .send()
        .await
        .unwrap();
    let body = problem(wrong_shape, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("invalid type"),
        "serde's own message: {body}"
    );

    // JSON has one number type: the OpenAPI document's schema (JSON Schema
    // 2020-12) counts `2.0` as an integer, so the route takes it as one; a
    // fraction stays refused with serde's message.
    let whole = client
        .post(server.url("/echo"))
        .json(&json!({"name": "tea", "count": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(
        whole.json::<Value>().await.unwrap(),
        json!({"name": "tea", "count": 2})
    );
    let fraction = client
        .post(server.url("/echo"))
        .json(&json!({"name": "tea", "count": 2.5}))
        .send()
        .await
        .unwrap();
    let body = problem(fraction, 422).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("floating point `2.5`"),
        "{body}"
    );

    let wrong_type = client
        .post(server.url("/echo"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    let body = problem(wrong_type, 415).await;
    assert!(
        body["detail"].as_str().unwrap().contains("Content-Type"),
        "{body}"
    );

    let bad_path = client.get(server.url("/items/abc")).send().await.unwrap();
    problem(bad_path, 400).await;
    let bad_query = client
        .get(server.url("/search?q=tea&limit=many"))
        .send()
        .await
        .unwrap();
    problem(bad_query, 400).await;

    let too_large = client
        .post(server.url("/small"))
        .body("x".repeat(17))
        .send()
        .await
        .unwrap();
    let body = problem(too_large, 413).await;
    assert!(
        body["detail"].as_str().unwrap().contains("16 bytes"),
        "{body}"
    );
    let fits = client
        .post(server.url("/small"))
        .body("x".repeat(16))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);

    let missing = client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    problem(missing, 404).await;

    let wrong_method = client.put(server.url("/hello")).send().await.unwrap();
    assert_eq!(wrong_method.headers().get("allow").unwrap(), "GET, HEAD");
    problem(wrong_method, 405).await;

    let conflict = client.delete(server.url("/things/7")).send().await.unwrap();
    let body = problem(conflict, 409).await;
    assert_eq!(body["detail"], "thing 7 is in use");
    assert_eq!(body["thing"], 7);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let (server, client) = start().await;
    let chunks: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok("0123456789"), Ok("0123456789")];
    let body = reqwest::Body::wrap_stream(futures_stream(chunks));
    let resp = client
        .post(server.url("/small"))
        .body(body)
        .send()
        .await
        .unwrap();
    problem(resp, 413).await;
    server.shutdown().await.unwrap();
}

fn futures_stream(
    items: Vec<Result<&'static str, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<&'static str, std::io::Error>> {
    futures_util::stream::iter(items)
}

#[tokio::test]
async fn server_errors_panics_and_timeouts() {
    let (server, client) = start().await;

    let failed = client.get(server.url("/fail")).send().await.unwrap();
    let body = problem(failed, 500).await;
    assert!(
        !body["detail"].as_str().unwrap().contains("hunter2"),
        "internal causes must not leak: {body}"
    );

    let panicked = client.get(server.url("/panic")).send().await.unwrap();
    problem(panicked, 500).await;
    // The service lives on.
    assert_eq!(get_text(&client, &server.url("/hello")).await, "hello");

    let started = std::time::Instant::now();
    let slow = client.get(server.url("/slow")).send().await.unwrap();
    let body = problem(slow, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("100ms"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout cut the request short"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn trace_context_passes_through_without_an_exporter() {
    let (server, client) = start().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out: Value = client
        .get(server.url("/propagate"))
        .header("traceparent", traceparent)
        .header("baggage", "tenant=acme")
        .header("x-correlation-id", "prop-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"traceparent": traceparent, "baggage": "tenant=acme", "x-correlation-id": "prop-1"})
    );
    let bare: Value = client
        .get(server.url("/propagate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        bare.as_object().unwrap().len(),
        1,
        "only the correlation id: {bare}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_with_the_same_middleware() {
    let (server, _) = start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(server.url("/cid"))
        .header("x-correlation-id", "h2-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.headers()["x-correlation-id"], "h2-1");
    assert_eq!(resp.text().await.unwrap(), "h2-1");
    let missing = h2.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.version(), reqwest::Version::HTTP_2);
    problem(missing, 404).await;
    // Several requests share one connection concurrently.
    let calls = (0..8).map(|i| {
        let h2 = h2.clone();
        let url = server.url(&format!("/items/{i}"));
        async move { h2.get(url).send().await.unwrap().text().await.unwrap() }
    });
    let bodies = futures_util::future::join_all(calls).await;
    assert_eq!(
        bodies,
        (0..8).map(|i| format!("item {i}")).collect::<Vec<_>>()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn handlers_stay_plain_functions() {
    assert_eq!(hello().await, "hello");
    assert_eq!(item(Path(5)).await, "item 5");
    let counter = Dep::new(Counter(AtomicUsize::new(41)));
    assert_eq!(count(counter).await, "42");
    let err = delete_thing(Path(1)).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn graceful_shutdown_in_process_finishes_in_flight_requests() {
    let (server, client) = start().await;
    let slow_url = server.url("/items/1");
    // Hold a request in flight across the shutdown with a slow body upload.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<&'static str, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let echo_url = server.url("/small");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.post(echo_url).body(body).send().await }
    });
    tx.send(Ok("part1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(Ok("part2")).await.unwrap();
    drop(tx);
    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "part1part2");
    let after = reqwest::Client::new().get(&slow_url).send().await;
    assert!(after.is_err(), "new connections are refused after shutdown");
    server.join().await.unwrap();
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<&'static str, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<&'static str, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A service whose read timeout (1 s) is much shorter than its idle
/// timeout (3 s), to tell the two apart.
async fn start_with_short_read_timeout() -> TestServer {
    let mut svc = service();
    svc.config_mut().http_read_timeout = Duration::from_secs(1);
    svc.config_mut().http_idle_timeout = Duration::from_secs(3);
    TestServer::start(svc).await.expect("service starts")
}

/// Issue 17 item 5: an idle HTTP/2 connection whose client pings lives past
/// the read timeout, until the idle timeout, and is then closed with GOAWAY
/// (the connection ends cleanly, not with a reset).
#[tokio::test(flavor = "multi_thread")]
async fn a_pinging_http2_connection_lives_until_the_idle_timeout() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let server = start_with_short_read_timeout().await;
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .handshake::<_, String>(TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    let started = std::time::Instant::now();
    let conn = tokio::spawn(conn);
    let get = |send: &mut hyper::client::conn::http2::SendRequest<String>| {
        let req = http::Request::get(format!("http://{}/items/1", server.addr()))
            .body(String::new())
            .unwrap();
        send.send_request(req)
    };
    let first = get(&mut send).await.expect("first request");
    assert_eq!(first.status(), 200);
    let _ = first.into_body().collect().await;
    // Past the read timeout, with PINGs flowing, the connection still serves.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let second = get(&mut send)
        .await
        .expect("the pinging connection survived the read timeout");
    assert_eq!(second.status(), 200);
    let _ = second.into_body().collect().await;
    // Idle (PINGs are no requests): closed after the idle timeout, cleanly.
    let ended = tokio::time::timeout(Duration::from_secs(8), conn)
        .await
        .expect("closed at the idle timeout")
        .unwrap();
    assert!(ended.is_ok(), "closed with GOAWAY, not cut: {ended:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "idle timeout counted from the last request: {:?}",
        started.elapsed()
    );
    server.shutdown().await.unwrap();
}

/// Issue 17 item 5: a stray CRLF between HTTP/1 requests (allowed by RFC
/// 9112 §2.2) does not start the request-head read timer.
#[tokio::test]
async fn a_stray_crlf_on_a_keep_alive_connection_is_no_request_head() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_with_short_read_timeout().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let request = b"GET /alive HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    tcp.write_all(request).await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    tcp.write_all(b"\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    tcp.write_all(request).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "the connection was cut after the CRLF: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    server.shutdown().await.unwrap();
}

/// Sends `raw` on a new connection and returns what came back until the
/// server closed it or 3 s passed.
async fn raw_exchange(server: &TestServer, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Issue 17 item 8: an HTTP/1.1 request without a Host header, or with
/// several, is a 400 problem (RFC 9112 §3.2); HTTP/1.0 needs none.
#[tokio::test]
async fn http11_needs_exactly_one_host_header() {
    let (server, _) = start().await;
    for raw in [
        &b"GET /hello HTTP/1.1\r\n\r\n"[..],
        &b"GET /alive HTTP/1.1\r\n\r\n"[..],
        &b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
    ] {
        let answer = raw_exchange(&server, raw).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("Host header"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("x-correlation-id: "),
            "{answer}"
        );
    }
    let old = raw_exchange(&server, b"GET /hello HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    server.shutdown().await.unwrap();
}

/// Issue 17 item 8: a body still arriving when the handler timeout fires is
/// the client's 408, not the service's 503.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let (server, client) = start().await;
    let answer = raw_exchange(
        &server,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    // A slow handler is still the service's 503.
    let slow = client.get(server.url("/slow")).send().await.unwrap();
    assert_eq!(slow.status(), 503);
    server.shutdown().await.unwrap();
}

/// Issue 17 item 8: the management and debug routes' 405 is a problem body
/// with `Allow` and a correlation id, as on user routes.
#[tokio::test]
async fn management_and_debug_405_are_problems() {
    let server = TestServer::start(service().with_unauthenticated_debug_endpoints())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        (reqwest::Method::POST, "/alive", "GET,HEAD"),
        (reqwest::Method::DELETE, "/metrics", "GET,HEAD"),
        (reqwest::Method::GET, "/debug/log/debug", "POST"),
    ] {
        let resp = client
            .request(method.clone(), server.url(path))
            .header("x-correlation-id", "m-405")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["x-correlation-id"],
            "m-405",
            "{method} {path}"
        );
        let allowed = resp.headers()["allow"].to_str().unwrap().replace(' ', "");
        assert_eq!(allowed, allow, "{method} {path}");
        let body = problem(resp, 405).await;
        assert!(
            body["detail"].as_str().unwrap().contains("allowed"),
            "{method} {path}: {body}"
        );
    }
    server.shutdown().await.unwrap();
}

/// Issue 17 item 8: invalid UTF-8 anywhere in a JSON body is a 400, also
/// in a field the handler's type ignores.
#[tokio::test]
async fn invalid_utf8_anywhere_in_a_json_body_is_400() {
    let (server, client) = start().await;
    let mut body = br#"{"name":"a","count":1,"ignored":""#.to_vec();
    body.extend_from_slice(b"\xff\xfe\"}");
    let resp = client
        .post(server.url("/echo"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let problem_body = problem(resp, 400).await;
    assert!(
        problem_body["detail"].as_str().unwrap().contains("UTF-8"),
        "{problem_body}"
    );
    let fine = client
        .post(server.url("/echo"))
        .json(&json!({"name": "Zoë ✓", "count": 2, "ignored": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
    server.shutdown().await.unwrap();
}
