//! Static files (`Service::with_files`, `Files`) over real HTTP: content
//! types, ETag and Last-Modified with conditional requests, ranges,
//! precompressed variants, directories, the SPA fallback, problem bodies
//! and the request guard's correlation id and metrics — and traversal
//! attempts sent byte for byte by curl (`--path-as-is`): `..` plain and
//! encoded, NUL, backslashes, and a symlink leading out of the root.

use std::path::PathBuf;
use std::process::Command;

use patron::http::Files;
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::{prom, unique};

/// A site on disk: `public/` with files, and a secret beside it.
struct Site {
    dir: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = std::env::temp_dir().join(unique("files"));
        let public = dir.join("public");
        std::fs::create_dir_all(public.join("docs")).unwrap();
        std::fs::write(public.join("app.css"), "body { color: red }\n").unwrap();
        std::fs::write(public.join("index.html"), "<h1>home</h1>\n").unwrap();
        std::fs::write(public.join("docs/index.html"), "<h1>docs</h1>\n").unwrap();
        std::fs::write(public.join("data.txt"), "0123456789").unwrap();
        let js = "console.log('plain');\n".repeat(20);
        std::fs::write(public.join("app.js"), &js).unwrap();
        std::fs::write(public.join("app.js.br"), b"BROTLI-BYTES").unwrap();
        std::fs::write(dir.join("secret.txt"), "top secret").unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), public.join("leak.txt")).unwrap();
        Site { dir }
    }

    fn public(&self) -> PathBuf {
        self.dir.join("public")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn serve(files: Files) -> TestServer {
    TestServer::start(Service::new("files").with_routes([]).with_file_mount(files))
        .await
        .unwrap()
}

/// curl with the path sent as written: (status, body).
fn raw_get(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--path-as-is",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_served_with_types_validators_ranges_and_variants() {
    let site = Site::new();
    let server = serve(
        Files::new("/static", site.public()).cache_control(std::time::Duration::from_secs(60)),
    )
    .await;

    let css = server
        .get("/static/app.css")
        .correlation_id("files-1")
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(css.text(), "body { color: red }\n");
    assert_eq!(css.header("content-type"), Some("text/css"));
    assert_eq!(css.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(css.header("x-correlation-id"), Some("files-1"));
    let etag = css.header("etag").expect("an ETag").to_string();
    let modified = css
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();

    let again = server
        .get("/static/app.css")
        .header("if-none-match", &etag)
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert!(again.bytes().is_empty());
    let since = server
        .get("/static/app.css")
        .header("if-modified-since", &modified)
        .await
        .unwrap();
    assert_eq!(since.status(), 304);
    // If-None-Match wins: a different tag means the file is sent.
    let other = server
        .get("/static/app.css")
        .header("if-none-match", "W/\"other\"")
        .header("if-modified-since", &modified)
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    let range = server
        .get("/static/data.txt")
        .header("range", "bytes=2-5")
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.text(), "2345");
    assert_eq!(range.header("content-range"), Some("bytes 2-5/10"));
    let beyond = server
        .get("/static/data.txt")
        .header("range", "bytes=50-60")
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);

    let br = server
        .get("/static/app.js")
        .header("accept-encoding", "br")
        .await
        .unwrap();
    assert_eq!(br.status(), 200);
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(
        br.bytes().as_ref(),
        b"BROTLI-BYTES",
        "the precompressed file, as stored"
    );
    let br_tag = br.header("etag").unwrap().to_string();
    assert_ne!(
        br_tag,
        server
            .get("/static/app.js")
            .await
            .unwrap()
            .header("etag")
            .unwrap(),
        "each variant has its own tag"
    );
    let plain = server.get("/static/app.js").await.unwrap();
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.text().starts_with("console.log"));

    // A directory serves its index; without the slash, a redirect to it.
    let docs = server.get("/static/docs/").await.unwrap();
    assert_eq!(
        (docs.status().as_u16(), docs.text().as_str()),
        (200, "<h1>docs</h1>\n")
    );
    let moved = server.get("/static/docs?x=1").await.unwrap();
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.header("location"), Some("/static/docs/?x=1"));

    let head = server
        .request(Method::HEAD, "/static/app.css")
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().is_empty());

    // Through the request guard: counted under the mount's pattern.
    let text = server.get("/metrics").await.unwrap().text();
    let served = prom::value(
        &prom::parse(&text),
        "http_server_request_duration_seconds_count",
        &[
            ("http_route", "/static/{*path}"),
            ("http_response_status_code", "200"),
        ],
    );
    assert!(served.is_some_and(|n| n >= 5.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_and_wrong_methods_get_problem_bodies() {
    let site = Site::new();
    let server = serve(Files::new("/static", site.public())).await;
    let missing = server
        .get("/static/nope.css")
        .correlation_id("files-404")
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(missing.header("x-correlation-id"), Some("files-404"));
    let post = server.post("/static/app.css").body("x").await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        post.header("content-type"),
        Some("application/problem+json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_find_nothing() {
    let site = Site::new();
    let server = serve(Files::new("/static", site.public())).await;
    let port = server.addr().port();
    let attempts = [
        "/static/../secret.txt",
        "/static/docs/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/.%2e/secret.txt",
        "/static/app.css%00.txt",
        "/static/..%5csecret.txt",
        "/static/leak.txt",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
    ];
    for path in attempts {
        let (status, body) = tokio::task::spawn_blocking(move || raw_get(port, path))
            .await
            .unwrap();
        assert!(
            !body.contains("top secret") && !body.contains("root:"),
            "{path} leaked: {body}"
        );
        assert!(matches!(status, 400 | 404), "{path}: {status} {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_page_app_gets_its_index_for_client_side_routes() {
    let site = Site::new();
    let server = TestServer::start(
        Service::new("spa")
            .with_file_mount(Files::new("/", site.public()).spa_fallback("index.html")),
    )
    .await
    .unwrap();
    let route = server.get("/users/42").await.unwrap();
    assert_eq!(
        (route.status().as_u16(), route.text().as_str()),
        (200, "<h1>home</h1>\n")
    );
    assert!(route.header("etag").is_some());
    assert_eq!(
        server.get("/app.css").await.unwrap().text(),
        "body { color: red }\n"
    );
    // Management routes still answer.
    assert_eq!(server.get("/alive").await.unwrap().status(), 200);
    // Traversal does not reach the fallback either.
    let port = server.addr().port();
    let (status, body) = tokio::task::spawn_blocking(move || raw_get(port, "/%2e%2e/secret.txt"))
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_mount_stops_start_up() {
    let err = TestServer::start(
        Service::new("bad")
            .with_routes([])
            .with_files("/static", "/nonexistent/public"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot read the directory /nonexistent/public"),
        "{err}"
    );
    let site = Site::new();
    let err = TestServer::start(
        Service::new("bad")
            .with_routes([])
            .with_files("static/", site.public()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("file prefix \"static/\""), "{err}");
}
