//! The route cache (`cache = "…"`) over real HTTP: hits with `Age`, the
//! request directives (`no-cache`, `no-store`, `max-age`, `min-fresh`,
//! `max-stale`, `only-if-cached`), the response ones (`no-store`,
//! `private`, `max-age`, `Set-Cookie`), `Vary`, `ETag` → 304, HEAD, single
//! flight under concurrent misses, the authenticator still in front,
//! metrics, and the Redis store shared by two services.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use patron::config::CacheBackend;
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::{prom, unique};

/// Calls per id, across every service in this process.
static CALLS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

fn call(id: &str) -> u32 {
    let mut calls = CALLS.lock().unwrap();
    let n = calls
        .get_or_insert_with(HashMap::new)
        .entry(id.to_string())
        .or_insert(0);
    *n += 1;
    *n
}

fn calls(id: &str) -> u32 {
    CALLS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|c| c.get(id).copied())
        .unwrap_or(0)
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Knobs {
    cc: Option<String>,
    vary: Option<bool>,
    etag: Option<bool>,
    cookie: Option<bool>,
    slow: Option<u64>,
}

#[patron::route(GET "/counted/{id}", cache = "1m")]
async fn counted(
    Path(id): Path<String>,
    Query(k): Query<Knobs>,
    headers: HeaderMap,
) -> (HeaderMap, String) {
    if let Some(ms) = k.slow {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let n = call(&id);
    let mut out = HeaderMap::new();
    match k.cc.as_deref() {
        Some("short") => drop(out.insert("cache-control", "max-age=1".parse().unwrap())),
        Some(other) => drop(out.insert("cache-control", other.parse().unwrap())),
        None => {}
    }
    let mut body = format!("{id}:{n}");
    if k.vary == Some(true) {
        out.insert("vary", "accept-language".parse().unwrap());
        let lang = headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        body = format!("{body}:{lang}");
    }
    if k.etag == Some(true) {
        out.insert("etag", format!("\"v{n}\"").parse().unwrap());
    }
    if k.cookie == Some(true) {
        out.insert("set-cookie", "session=1".parse().unwrap());
    }
    (out, body)
}

#[patron::route(GET "/short/{id}", cache = "1s")]
async fn short(Path(id): Path<String>) -> String {
    format!("{id}:{}", call(&id))
}

/// Lets in requests with `x-let-in: yes`.
struct LetIn;

impl Authenticator for LetIn {
    async fn authenticate(&self, request: &http::request::Parts) -> patron::Result<bool> {
        Ok(request.headers.get("x-let-in").is_some_and(|v| v == "yes"))
    }
}

#[patron::route(GET "/guarded/{id}", auth = LetIn, cache = "1m")]
async fn guarded(Path(id): Path<String>) -> String {
    format!("{id}:{}", call(&id))
}

async fn serve() -> TestServer {
    TestServer::start(Service::new("cache").provide(LetIn))
        .await
        .unwrap()
}

async fn get(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> patron::test::TestResponse {
    let mut req = server.get(path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_serves_the_stored_response_with_its_age() {
    let server = serve().await;
    let id = unique("hit");
    let first = get(&server, &format!("/counted/{id}"), &[]).await;
    assert_eq!(first.text(), format!("{id}:1"));
    assert_eq!(
        first.header("cache-control"),
        Some("max-age=60"),
        "the route's lifetime"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = get(
        &server,
        &format!("/counted/{id}"),
        &[("x-correlation-id", "c-hit")],
    )
    .await;
    assert_eq!(second.text(), format!("{id}:1"));
    assert!(
        second
            .header("age")
            .is_some_and(|a| a.parse::<u64>().unwrap() >= 1),
        "{:?}",
        second.headers()
    );
    assert_eq!(
        second.header("x-correlation-id"),
        Some("c-hit"),
        "hits go through the guard"
    );
    let head = server
        .request(Method::HEAD, &format!("/counted/{id}"))
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(
        head.header("age").is_some(),
        "HEAD is answered from the GET entry"
    );
    // The query is part of the key.
    assert_eq!(
        get(&server, &format!("/counted/{id}?x=1"), &[])
            .await
            .text(),
        format!("{id}:2")
    );
    assert_eq!(calls(&id), 2);

    let text = server.get("/metrics").await.unwrap().text();
    let samples = prom::parse(&text);
    let hits = prom::value(
        &samples,
        "http_cache_requests_total",
        &[("route", "/counted/{id}"), ("outcome", "hit")],
    );
    let misses = prom::value(
        &samples,
        "http_cache_requests_total",
        &[("route", "/counted/{id}"), ("outcome", "miss")],
    );
    assert!(
        hits.is_some_and(|n| n >= 2.0) && misses.is_some_and(|n| n >= 2.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_directives_are_honoured() {
    let server = serve().await;
    let id = unique("req");
    let path = format!("/counted/{id}");
    let body = |n: u32| format!("{id}:{n}");
    assert_eq!(
        get(&server, &path, &[("cache-control", "only-if-cached")])
            .await
            .status(),
        504
    );
    assert_eq!(get(&server, &path, &[]).await.text(), body(1));
    assert_eq!(
        get(&server, &path, &[("cache-control", "only-if-cached")])
            .await
            .text(),
        body(1)
    );
    // no-cache: a new response, which is stored.
    assert_eq!(
        get(&server, &path, &[("cache-control", "no-cache")])
            .await
            .text(),
        body(2)
    );
    assert_eq!(get(&server, &path, &[]).await.text(), body(2));
    // no-store: a new response, not stored.
    assert_eq!(
        get(&server, &path, &[("cache-control", "no-store")])
            .await
            .text(),
        body(3)
    );
    assert_eq!(get(&server, &path, &[]).await.text(), body(2));
    // max-age=0 and a min-fresh past the lifetime want a newer one.
    assert_eq!(
        get(&server, &path, &[("cache-control", "max-age=0")])
            .await
            .text(),
        body(4)
    );
    assert_eq!(
        get(&server, &path, &[("cache-control", "min-fresh=3600")])
            .await
            .text(),
        body(5)
    );
    assert_eq!(
        get(&server, &path, &[("cache-control", "max-age=30")])
            .await
            .text(),
        body(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_served_only_within_max_stale() {
    let server = serve().await;
    let id = unique("stale");
    let path = format!("/short/{id}");
    assert_eq!(get(&server, &path, &[]).await.text(), format!("{id}:1"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        get(&server, &path, &[("cache-control", "max-stale=60")])
            .await
            .text(),
        format!("{id}:1")
    );
    assert_eq!(
        get(&server, &path, &[("cache-control", "max-stale=0")])
            .await
            .text(),
        format!("{id}:2")
    );
    assert_eq!(get(&server, &path, &[]).await.text(), format!("{id}:2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_directives_decide_what_is_stored() {
    let server = serve().await;
    for (knob, stored) in [
        ("cc=no-store", false),
        ("cc=private", false),
        ("cookie=true", false),
        ("cc=public", true),
    ] {
        let id = unique("res");
        let path = format!("/counted/{id}?{knob}");
        get(&server, &path, &[]).await;
        let again = get(&server, &path, &[]).await.text();
        let expected = if stored {
            format!("{id}:1")
        } else {
            format!("{id}:2")
        };
        assert_eq!(again, expected, "{knob}");
    }
    // A shorter max-age from the handler wins over the route's minute.
    let id = unique("res");
    let path = format!("/counted/{id}?cc=short");
    assert_eq!(get(&server, &path, &[]).await.text(), format!("{id}:1"));
    assert_eq!(get(&server, &path, &[]).await.text(), format!("{id}:1"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&server, &path, &[]).await.text(), format!("{id}:2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_and_validators() {
    let server = serve().await;
    let id = unique("vary");
    let path = format!("/counted/{id}?vary=true");
    let en = [("accept-language", "en")];
    let de = [("accept-language", "de")];
    assert_eq!(get(&server, &path, &en).await.text(), format!("{id}:1:en"));
    assert_eq!(get(&server, &path, &de).await.text(), format!("{id}:2:de"));
    assert_eq!(get(&server, &path, &en).await.text(), format!("{id}:1:en"));
    assert_eq!(get(&server, &path, &de).await.text(), format!("{id}:2:de"));

    let id = unique("etag");
    let path = format!("/counted/{id}?etag=true");
    let first = get(&server, &path, &[]).await;
    assert_eq!(first.header("etag"), Some("\"v1\""));
    let revalidated = get(&server, &path, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(revalidated.status(), 304);
    assert!(revalidated.bytes().is_empty());
    assert_eq!(
        get(&server, &path, &[("if-none-match", "\"v0\"")])
            .await
            .status(),
        200
    );
    assert_eq!(calls(&id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_compute_once() {
    let server = std::sync::Arc::new(serve().await);
    let id = unique("flight");
    let path = format!("/counted/{id}?slow=300");
    let mut all = Vec::new();
    for _ in 0..16 {
        let (server, path) = (server.clone(), path.clone());
        all.push(tokio::spawn(async move {
            get(&server, &path, &[]).await.text()
        }));
    }
    for task in all {
        assert_eq!(task.await.unwrap(), format!("{id}:1"));
    }
    assert_eq!(
        calls(&id),
        1,
        "one computation for sixteen concurrent misses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authenticator_still_guards_a_cached_route() {
    let server = serve().await;
    let id = unique("auth");
    let path = format!("/guarded/{id}");
    assert_eq!(
        get(&server, &path, &[("x-let-in", "yes")]).await.text(),
        format!("{id}:1")
    );
    assert_eq!(
        get(&server, &path, &[("x-let-in", "yes")]).await.text(),
        format!("{id}:1")
    );
    assert_eq!(
        get(&server, &path, &[]).await.status(),
        401,
        "a cached response is no way past the authenticator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_is_shared_by_instances() {
    let Some(url) = patron_tests::service("PATRON_TEST_REDIS_URL", "Redis") else {
        return;
    };
    let redis_service = || {
        let mut service = Service::new("cache-redis").provide(LetIn);
        service.config_mut().http_cache.backend =
            CacheBackend::Redis(patron::config::BrokerUrl::new(url.clone()));
        service
    };
    let a = TestServer::start(redis_service()).await.unwrap();
    let b = TestServer::start(redis_service()).await.unwrap();
    let id = unique("shared");
    let path = format!("/counted/{id}?vary=true");
    assert_eq!(
        get(&a, &path, &[("accept-language", "en")]).await.text(),
        format!("{id}:1:en")
    );
    assert_eq!(
        get(&b, &path, &[("accept-language", "en")]).await.text(),
        format!("{id}:1:en"),
        "b reads a's entry"
    );
    assert_eq!(
        get(&b, &path, &[("accept-language", "fr")]).await.text(),
        format!("{id}:2:fr")
    );
    assert_eq!(
        get(&a, &path, &[("accept-language", "fr")]).await.text(),
        format!("{id}:2:fr")
    );
    assert_eq!(calls(&id), 2);
    // An unreachable Redis costs the cache, not the requests.
    let mut down = Service::new("cache-down").provide(LetIn);
    down.config_mut().http_cache.backend = CacheBackend::Redis(patron::config::BrokerUrl::new(
        format!("redis://127.0.0.1:{}", patron_tests::free_port()),
    ));
    let down = TestServer::start(down).await.unwrap();
    let id = unique("down");
    let path = format!("/counted/{id}");
    let started = std::time::Instant::now();
    assert_eq!(get(&down, &path, &[]).await.text(), format!("{id}:1"));
    assert_eq!(get(&down, &path, &[]).await.text(), format!("{id}:2"));
    // Each Redis call is cut at 250 ms: four reads and a write per request.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_stays_within_its_size() {
    let mut service = Service::new("cache-small").provide(LetIn);
    service.config_mut().http_cache.size = 16 << 10;
    let server = TestServer::start(service).await.unwrap();
    let id = unique("small");
    let evicted = || async {
        let text = server.get("/metrics").await.unwrap().text();
        prom::value(&prom::parse(&text), "http_cache_evictions_total", &[]).unwrap_or(0.0)
    };
    // Each entry weighs its body plus 1 KiB: 64 of them cannot all stay.
    for i in 0..64 {
        get(&server, &format!("/counted/{id}-{i}"), &[]).await;
    }
    let settled = patron_tests::eventually(Duration::from_secs(5), || async {
        for i in 0..8 {
            get(&server, &format!("/counted/{id}-more-{i}"), &[]).await;
        }
        evicted().await > 0.0
    })
    .await;
    assert!(settled, "no eviction counted: {}", evicted().await);
}
