//! `patron openapi` and `patron asyncapi`: a service's OpenAPI or AsyncAPI
//! document, printed as indented JSON so a contract can be committed and
//! diffed in review — from a running service's `/openapi.json` or
//! `/asyncapi.json` (`--url`), or from its binary (`--bin`), which patron
//! runs with `PATRON_PRINT_CONTRACT` to validate, print and exit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Which document.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Document {
    /// `/openapi.json`.
    OpenApi,
    /// `/asyncapi.json`.
    AsyncApi,
}

impl Document {
    /// The `PATRON_PRINT_CONTRACT` value.
    fn name(self) -> &'static str {
        match self {
            Document::OpenApi => "openapi",
            Document::AsyncApi => "asyncapi",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Document::OpenApi => "/openapi.json",
            Document::AsyncApi => "/asyncapi.json",
        }
    }
}

/// Where the document comes from (the command line).
#[derive(Debug, clap::Args)]
pub(crate) struct Source {
    /// A running service's base URL, e.g. `http://127.0.0.1:50000` (plain
    /// HTTP).
    #[arg(long, required_unless_present = "bin", conflicts_with = "bin")]
    pub url: Option<String>,
    /// The service's binary: run with `PATRON_PRINT_CONTRACT`, it prints
    /// the document and exits without serving. The environment is passed
    /// on, so configuration that changes the document applies.
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

/// Why no document was printed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContractError {
    #[error("{url}: expected a plain http://host[:port] base URL")]
    Url { url: String },
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} answered {status}: {hint}")]
    Status {
        url: String,
        status: String,
        hint: &'static str,
    },
    #[error("{url} did not answer JSON: {reason}")]
    NotJson { url: String, reason: String },
    #[error("{}: {reason}", bin.display())]
    Binary { bin: PathBuf, reason: String },
}

/// The document, indented.
pub(crate) fn fetch(document: Document, source: &Source) -> Result<String, ContractError> {
    match (&source.url, &source.bin) {
        (Some(url), _) => from_url(document, url),
        (None, Some(bin)) => from_binary(document, bin),
        (None, None) => Err(ContractError::Url { url: String::new() }),
    }
}

fn from_binary(document: Document, bin: &PathBuf) -> Result<String, ContractError> {
    let fail = |reason: String| ContractError::Binary {
        bin: bin.clone(),
        reason,
    };
    let out = Command::new(bin)
        .env("PATRON_PRINT_CONTRACT", document.name())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "printed no JSON document ({e}); is it a patron service?"
        ))
    })?;
    serde_json::to_string_pretty(&body).map_err(|e| fail(e.to_string()))
}

fn from_url(document: Document, given: &str) -> Result<String, ContractError> {
    let base = given.trim_end_matches('/');
    let authority = base
        .strip_prefix("http://")
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| ContractError::Url {
            url: given.to_string(),
        })?;
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let url = format!("{base}{}", document.path());
    let fetch_error = |reason: String| ContractError::Fetch {
        url: url.clone(),
        reason,
    };
    let mut stream = TcpStream::connect(&address).map_err(|e| fetch_error(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n",
        document.path()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fetch_error(e.to_string()))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| fetch_error(e.to_string()))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fetch_error("no HTTP response".into()))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.lines().next().unwrap_or_default().to_string();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ContractError::Status {
            url,
            status,
            hint: match document {
                Document::OpenApi => {
                    "is patron built with the `openapi` feature, and PATRON_HTTP_OPENAPI not false?"
                }
                Document::AsyncApi => {
                    "is patron built with the `openapi` feature, does the service run consumers, and is PATRON_HTTP_OPENAPI not false?"
                }
            },
        });
    }
    let body: serde_json::Value =
        serde_json::from_slice(&answer[split + 4..]).map_err(|e| ContractError::NotJson {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    serde_json::to_string_pretty(&body).map_err(|e| ContractError::NotJson {
        url,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server answering `response`; its base URL.
    fn answering(response: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(response.as_bytes());
            }
        });
        url
    }

    fn source(url: &str) -> Source {
        Source {
            url: Some(url.to_string()),
            bin: None,
        }
    }

    #[test]
    fn the_document_is_printed_indented() {
        let url = answering(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"openapi\":\"3.1.0\",\"paths\":{}}",
        );
        let text = fetch(Document::OpenApi, &source(&url)).unwrap();
        assert_eq!(text, "{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {}\n}");
    }

    #[test]
    fn a_missing_document_says_what_to_check() {
        let url = answering("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        let err = fetch(Document::AsyncApi, &source(&url))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/asyncapi.json") && err.contains("404") && err.contains("consumers"),
            "{err}"
        );
    }

    #[test]
    fn bad_urls_and_dead_services_are_named() {
        for bad in [
            "https://svc:50000",
            "svc:50000",
            "http://svc:50000/base",
            "http://",
        ] {
            let err = fetch(Document::OpenApi, &source(bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains("http://host[:port]"), "{bad}: {err}");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = fetch(Document::OpenApi, &source(&url))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{url}/openapi.json")), "{err}");
        let url = answering("HTTP/1.1 200 OK\r\n\r\nnot json");
        let err = fetch(Document::OpenApi, &source(&url))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not answer JSON"), "{err}");
    }
}
