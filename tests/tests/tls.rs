//! TLS on the HTTP server, checked with peers patron did not write: curl
//! over HTTP/1.1 and HTTP/2 (ALPN) with the test CA, `openssl s_client`
//! verifying the chain and the ALPN choice, mutual TLS refusing a
//! client without a certificate, start-up errors naming the bad file, and a
//! SIGHUP that gives new handshakes a rotated certificate while an open
//! connection carries on. Certificates are made here with rcgen; no key is
//! committed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use patron::config::{Config, TlsFiles};
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::pki::Pki;
use patron_tests::{Proc, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CUSTOM: &str = env!("CARGO_BIN_EXE_custom");

#[patron::route(GET "/ping")]
async fn ping() -> &'static str {
    "pong"
}

async fn serve(files: TlsFiles) -> TestServer {
    let mut service = Service::new("tls");
    service.config_mut().http_tls = Some(files);
    TestServer::start(service).await.unwrap()
}

/// `curl` with `args`: (exit code, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_gets_https_over_http1_and_h2_by_alpn() {
    let pki = Pki::new();
    let server = serve(pki.files("server", false)).await;
    let url = format!("https://127.0.0.1:{}/ping", server.addr().port());
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().unwrap();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, out) = tokio::task::spawn_blocking({
            let url = url.clone();
            let ca = ca.to_string();
            move || curl(&["--cacert", &ca, flag, "-w", " %{http_version}", &url])
        })
        .await
        .unwrap();
        assert_eq!(
            (code, out.as_str()),
            (0, format!("pong {version}").as_str())
        );
    }
    // openssl agrees: the chain verifies against the CA, ALPN picks h2.
    let (port, ca_file) = (server.addr().port(), ca.to_string());
    let openssl = tokio::task::spawn_blocking(move || {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args([
                "-servername",
                "localhost",
                "-alpn",
                "h2,http/1.1",
                "-CAfile",
                &ca_file,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    assert!(openssl.contains("ALPN protocol: h2"), "{openssl}");
    assert!(openssl.contains("Verify return code: 0 (ok)"), "{openssl}");
    // Plain HTTP to a TLS port is refused, not served.
    let plain = format!("http://127.0.0.1:{}/ping", server.addr().port());
    let (_, out) = tokio::task::spawn_blocking(move || curl(&[&plain]))
        .await
        .unwrap();
    assert_ne!(out, "pong");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let server = serve(pki.files("server", true)).await;
    let (client_cert, client_key) = pki.issue("client", "a client");
    let url = format!("https://127.0.0.1:{}/ping", server.addr().port());
    let ca = pki.path("ca.pem").to_str().unwrap().to_string();
    let (cert, key) = (
        client_cert.to_str().unwrap().to_string(),
        client_key.to_str().unwrap().to_string(),
    );
    let info_url = url.replace("/ping", "/info");
    let (without, with, info) = tokio::task::spawn_blocking(move || {
        let client = ["--cacert", &ca, "--cert", &cert, "--key", &key];
        (
            curl(&["--cacert", &ca, &url]),
            curl(&[&client[..], &[url.as_str()]].concat()),
            curl(&[&client[..], &[info_url.as_str()]].concat()),
        )
    })
    .await
    .unwrap();
    assert_ne!(
        without.0, 0,
        "refused without a client certificate: {without:?}"
    );
    assert_eq!(with, (0, "pong".to_string()));
    let info: serde_json::Value = serde_json::from_str(&info.1).unwrap();
    assert_eq!(info["components"][0]["details"]["tls"], "mutual", "{info}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_tls_files_stop_start_up_naming_the_file() {
    let pki = Pki::new();
    let good = pki.files("server", false);
    let other = pki.files("other", false);
    let missing = pki.path("missing.pem");
    std::fs::write(pki.path("garbage.pem"), "not a certificate").unwrap();
    let cases = [
        (
            TlsFiles {
                cert: missing.clone(),
                ..good.clone()
            },
            missing.display().to_string(),
        ),
        (
            TlsFiles {
                cert: pki.path("garbage.pem"),
                ..good.clone()
            },
            "garbage.pem".to_string(),
        ),
        (
            TlsFiles {
                key: other.key.clone(),
                ..good.clone()
            },
            "does not belong to the certificate".to_string(),
        ),
        (
            TlsFiles {
                client_ca: Some(pki.path("garbage.pem")),
                ..good.clone()
            },
            "client CA".to_string(),
        ),
    ];
    for (files, expected) in cases {
        let mut service = Service::new("tls");
        service.config_mut().http_tls = Some(files);
        let err = TestServer::start(service).await.unwrap_err().to_string();
        assert!(err.contains(&expected), "{expected:?} in {err}");
    }
    // Half a configuration is a configuration error naming both variables.
    let err = Config::from_lookup(|name| {
        (name == "PATRON_HTTP_TLS_CERT").then(|| "cert.pem".to_string())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("PATRON_HTTP_TLS_CERT") && err.contains("PATRON_HTTP_TLS_KEY"),
        "{err}"
    );
}

/// A TLS client trusting the test CA.
fn connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Client = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(connector: &tokio_rustls::TlsConnector, port: u16) -> Client {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// The certificate the server presented, DER.
fn presented(conn: &Client) -> Vec<u8> {
    conn.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One keep-alive request on `conn`; the status line.
async fn request(conn: &mut Client) -> String {
    conn.write_all(b"GET /alive HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rotates_the_certificate_for_new_handshakes_and_keeps_open_connections() {
    let pki = Pki::new();
    let files = pki.files("server", false);
    let proc = Proc::spawn(
        CUSTOM,
        &[
            ("PATRON_HTTP_TLS_CERT", files.cert.to_str().unwrap()),
            ("PATRON_HTTP_TLS_KEY", files.key.to_str().unwrap()),
        ],
    );
    let connector = connector(&pki.path("ca.pem"));
    let up = eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", proc.port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "stderr: {:?}", proc.stderr());
    let mut open = connect(&connector, proc.port).await;
    let before = presented(&open);
    assert_eq!(request(&mut open).await, "HTTP/1.1 200 OK");

    // Rotate: a new certificate and key in the same files, then SIGHUP.
    pki.issue("server", "rotated");
    proc.signal(libc::SIGHUP);
    let rotated = eventually(Duration::from_secs(10), || async {
        presented(&connect(&connector, proc.port).await) != before
    })
    .await;
    assert!(
        rotated,
        "a new handshake gets the new certificate; logs: {:?}",
        proc.stdout()
    );
    assert_eq!(
        request(&mut open).await,
        "HTTP/1.1 200 OK",
        "the connection opened before the reload still serves"
    );
    assert!(
        proc.json_logs()
            .iter()
            .any(|l| l["message"] == "SIGHUP: reloaded"),
        "{:?}",
        proc.stdout()
    );

    // A broken file on reload keeps the current certificate.
    std::fs::write(&files.key, "broken").unwrap();
    proc.signal(libc::SIGHUP);
    let failed = eventually(Duration::from_secs(10), || async {
        proc.json_logs()
            .iter()
            .any(|l| l["message"] == "SIGHUP: reload failed; keeping the current one")
    })
    .await;
    assert!(failed, "{:?}", proc.stdout());
    let still = connect(&connector, proc.port).await;
    assert_ne!(presented(&still), before);
}
