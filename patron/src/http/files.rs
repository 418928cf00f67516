//! Static files under a path prefix ([`Files`], `Service::with_files`),
//! served by tower-http's `ServeDir` — content types, `Last-Modified` and
//! conditional requests, `Range`, precompressed `.br`/`.gz` variants — with
//! what patron adds: a path is resolved and checked to stay inside the
//! root before anything is opened (no `..`, encoded or not, no NUL, no
//! symlink leading out), an `ETag` with `If-None-Match` → 304, problem
//! bodies for 404 and 405, an optional `Cache-Control`, and an SPA
//! fallback. The files go through the request guard like a route:
//! correlation id, span, metrics, timeout, compression rules.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::cache::{self, opaque_tag};
use crate::error::Error;

/// A directory served under a path prefix; give it to
/// [`Service::with_file_mount`](crate::Service::with_file_mount), or use
/// [`Service::with_files`](crate::Service::with_files) for the defaults.
///
/// ```
/// use std::time::Duration;
/// use patron::http::Files;
///
/// let app = Files::new("/app", "dist")
///     .spa_fallback("index.html")
///     .cache_control(Duration::from_secs(300));
/// assert_eq!(app.prefix(), "/app");
/// ```
#[derive(Debug, Clone)]
pub struct Files {
    prefix: String,
    root: PathBuf,
    fallback: Option<PathBuf>,
    max_age: Option<Duration>,
}

impl Files {
    /// Serves the files under `root` at `prefix` (`/static/app.css` is
    /// `root/app.css`; a directory serves its `index.html`).
    pub fn new(prefix: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        Files {
            prefix: prefix.into(),
            root: root.into(),
            fallback: None,
            max_age: None,
        }
    }

    /// Answers a path that names no file with this file (relative to the
    /// root), status 200: a single-page application's client-side routes.
    pub fn spa_fallback(mut self, file: impl Into<PathBuf>) -> Self {
        self.fallback = Some(file.into());
        self
    }

    /// Sends `Cache-Control: public, max-age=…` with every file.
    pub fn cache_control(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The path prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The route pattern the files answer on (`/static/{*path}`).
    pub(crate) fn pattern(&self) -> String {
        if self.prefix == "/" {
            "/{*path}".to_string()
        } else {
            format!("{}/{{*path}}", self.prefix)
        }
    }

    /// What is wrong with the mount, for start-up validation.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let p = &self.prefix;
        let prefix_ok = p.starts_with('/')
            && (p == "/" || !p.ends_with('/'))
            && !p.contains(['{', '}', '*', '?', '#'])
            && !p.split('/').any(|s| s == ".." || s == ".");
        if !prefix_ok {
            problems.push(format!(
                "file prefix {p:?} must be a plain path such as \"/static\" (starting with `/`, no trailing `/`, no `{{`, `*`, `?` or `..`)"
            ));
        }
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => problems.push(format!(
                "files for {p}: {} is not a directory",
                self.root.display()
            )),
            Err(e) => problems.push(format!(
                "files for {p}: cannot read the directory {}: {e}",
                self.root.display()
            )),
        }
        if let Some(fallback) = &self.fallback {
            let file = self.root.join(fallback);
            if !file.is_file() {
                problems.push(format!(
                    "files for {p}: the SPA fallback {} is not a file",
                    file.display()
                ));
            }
        }
        problems
    }

    /// The service answering the mount's requests (paths relative to the
    /// prefix), once the root is known to exist.
    pub(crate) fn service(&self) -> Result<FileService, String> {
        let root = std::fs::canonicalize(&self.root)
            .map_err(|e| format!("cannot resolve {}: {e}", self.root.display()))?;
        let serve = ServeDir::new(&root)
            .precompressed_br()
            .precompressed_gzip()
            .append_index_html_on_directories(true);
        Ok(FileService(Arc::new(Mount {
            serve,
            fallback: self.fallback.as_ref().map(|f| root.join(f)),
            root,
            cache_control: self.max_age.and_then(|a| {
                HeaderValue::from_str(&format!("public, max-age={}", a.as_secs())).ok()
            }),
        })))
    }
}

struct Mount {
    root: PathBuf,
    serve: ServeDir,
    fallback: Option<PathBuf>,
    cache_control: Option<HeaderValue>,
}

/// The tower service of one mount (cheap to clone).
#[derive(Clone)]
pub(crate) struct FileService(Arc<Mount>);

impl tower::Service<Request> for FileService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future =
        futures_util::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let mount = Arc::clone(&self.0);
        Box::pin(async move { Ok(serve(&mount, req).await) })
    }
}

fn not_found() -> Response {
    Error::not_found("no file at this path").into_response()
}

/// One request, relative to the mount's prefix.
async fn serve(mount: &Mount, mut req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "files accept GET and HEAD only",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(relative) = safe_relative(req.uri().path()) else {
        return not_found();
    };
    let file = match resolve(&mount.root, &relative).await {
        Some(file) => file,
        None => return fallback(mount, req).await,
    };
    let tag = match tokio::fs::metadata(&file).await {
        Ok(meta) if meta.is_file() => etag(&meta),
        Ok(_) if !req.uri().path().ends_with('/') => return to_directory(&req),
        // A directory: ServeDir serves its index.html.
        Ok(_) => None,
        Err(_) => return fallback(mount, req).await,
    };
    if let Some(tag) = &tag
        && let Some(wanted) = req.headers().get(header::IF_NONE_MATCH)
    {
        if if_none_match(wanted, tag) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            finish(mount, &mut response, Some(tag));
            return response;
        }
        // RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since.
        req.headers_mut().remove(header::IF_MODIFIED_SINCE);
    }
    let mut response = match mount.serve.clone().oneshot(req).await {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    match response.status() {
        StatusCode::NOT_FOUND => return not_found(),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED => {
            let variant = tag.as_ref().map(|t| variant_tag(t, &response));
            finish(mount, &mut response, variant.as_deref());
        }
        _ => {}
    }
    response
}

/// A directory asked for without its trailing slash: a redirect to it
/// (to the path as the client sent it, prefix included), so relative links
/// in its index resolve.
fn to_directory(req: &Request) -> Response {
    let uri = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().clone(), |o| o.0.clone());
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(_) => not_found(),
    }
}

/// The SPA fallback file, or a 404.
async fn fallback(mount: &Mount, req: Request) -> Response {
    let Some(file) = &mount.fallback else {
        return not_found();
    };
    let Ok(meta) = tokio::fs::metadata(file).await else {
        return not_found();
    };
    let tag = etag(&meta);
    let mut fallback_req = Request::new(Body::empty());
    *fallback_req.method_mut() = req.method().clone();
    *fallback_req.headers_mut() = req.headers().clone();
    let served = tower_http::services::ServeFile::new(file)
        .oneshot(fallback_req)
        .await;
    let mut response = match served {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
        finish(mount, &mut response, tag.as_deref());
    }
    response
}

fn finish(mount: &Mount, response: &mut Response, tag: Option<&str>) {
    let headers = response.headers_mut();
    if let Some(value) = tag.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(header::ETAG, value);
    }
    if let Some(cc) = &mount.cache_control {
        headers.insert(header::CACHE_CONTROL, cc.clone());
    }
}

/// The request path, percent-decoded, as path components that cannot leave
/// the root: `None` for `..`, NUL, a backslash, a drive prefix or bytes that
/// are not UTF-8.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => {
                let p = Path::new(part);
                if p.components().any(|c| !matches!(c, Component::Normal(_))) {
                    return None;
                }
                out.push(part);
            }
        }
    }
    Some(out)
}

/// `root/relative` with every symlink resolved, when it exists and stays
/// inside `root` (already canonical).
async fn resolve(root: &Path, relative: &Path) -> Option<PathBuf> {
    let real = tokio::fs::canonicalize(root.join(relative)).await.ok()?;
    real.starts_with(root).then_some(real)
}

/// A weak validator from the file's modification time and size.
fn etag(meta: &std::fs::Metadata) -> Option<String> {
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!(
        "W/\"{:x}.{:x}-{:x}\"",
        modified.as_secs(),
        modified.subsec_nanos(),
        meta.len()
    ))
}

/// The tag of the variant served: a precompressed file gets its own.
fn variant_tag(tag: &str, response: &Response) -> String {
    match response
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        Some(encoding) => format!("{}-{encoding}\"", tag.trim_end_matches('"')),
        None => tag.to_string(),
    }
}

/// `If-None-Match` against `tag`, weakly, also taking the tags of its
/// encoded variants (`…-br`, `…-gzip`).
fn if_none_match(wanted: &HeaderValue, tag: &str) -> bool {
    let ours = opaque_tag(tag);
    cache::if_none_match(wanted, |candidate| {
        candidate == ours
            || candidate
                .strip_prefix(ours)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_odd_paths_are_refused() {
        for bad in [
            "/../secret",
            "/a/../../secret",
            "/%2e%2e/secret",
            "/%2E%2E%2Fsecret",
            "/..%2fsecret",
            "/a%00.txt",
            "/a%5c..%5csecret",
            "/%ff",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
        assert_eq!(
            safe_relative("/css/app.css"),
            Some(PathBuf::from("css/app.css"))
        );
        assert_eq!(safe_relative("/a%20b.txt"), Some(PathBuf::from("a b.txt")));
        assert_eq!(safe_relative("//./x"), Some(PathBuf::from("x")));
    }

    #[test]
    fn if_none_match_compares_weakly_and_knows_variants() {
        let tag = r#"W/"5f.0-10""#;
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(if_none_match(&v(r#"W/"5f.0-10""#), tag));
        assert!(if_none_match(&v(r#""5f.0-10""#), tag));
        assert!(if_none_match(&v(r#""x", W/"5f.0-10-br""#), tag));
        assert!(if_none_match(&v("*"), tag));
        assert!(!if_none_match(&v(r#"W/"5f.0-11""#), tag));
        assert!(!if_none_match(&v(r#"W/"5f.0-100""#), tag));
    }

    #[test]
    fn mount_problems_name_what_is_wrong() {
        let files = Files::new("static/", "/nonexistent/dir").spa_fallback("index.html");
        let problems = files.problems().join("\n");
        assert!(problems.contains("file prefix \"static/\""), "{problems}");
        assert!(problems.contains("/nonexistent/dir"), "{problems}");
        assert!(problems.contains("SPA fallback"), "{problems}");
    }
}
