//! TLS for the HTTP server: rustls with ALPN `h2` and `http/1.1`, the
//! certificate chain and key read from PEM files, optional client
//! certificates (mutual TLS), and a reload — on SIGHUP — that swaps the
//! certificate for new handshakes while open connections carry on.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;
use crate::error::Error;

/// How `/info` describes a server's TLS: `off`, `on`, or `mutual`.
pub(crate) fn mode(files: Option<&TlsFiles>) -> &'static str {
    match files {
        None => "off",
        Some(files) if files.client_ca.is_some() => "mutual",
        Some(_) => "on",
    }
}

/// A server's TLS: the acceptor and the certificate it can reload.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    certificate: Arc<Current>,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The certificate new handshakes get.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

impl Tls {
    /// Reads `files`; every problem names the file and what is wrong.
    pub(crate) fn load(files: &TlsFiles) -> Result<Tls, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(Current(RwLock::new(Arc::new(certified_key(
            files, &provider,
        )?))));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::msg(format!("TLS: no usable protocol version: {e}")))?;
        let builder = match &files.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca, "client CA")? {
                    roots.add(cert).map_err(|e| {
                        Error::msg(format!(
                            "TLS client CA {}: not a usable CA certificate: {e}",
                            ca.display()
                        ))
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| Error::msg(format!("TLS client CA {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&certificate) as _);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            files: files.clone(),
            provider,
        })
    }

    /// Reads the certificate and key again; new handshakes get them, open
    /// connections keep theirs. On error the current certificate stays.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let key = certified_key(&self.files, &self.provider)?;
        *self
            .certificate
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The TLS handshake on `stream`, bounded by `limit` (the read timeout:
    /// a client that stalls it holds nothing for long).
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        limit: Duration,
    ) -> Result<TlsStream<TcpStream>, String> {
        match tokio::time::timeout(limit, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err(format!(
                "TLS handshake not completed within {}",
                humantime::format_duration(limit)
            )),
        }
    }
}

/// The certificate chain and key of `files`, checked to belong together.
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
    let chain = certificates(&files.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        Error::msg(format!(
            "TLS private key {}: {}",
            files.key.display(),
            pem_problem(e)
        ))
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        Error::msg(format!(
            "TLS private key {}: not a usable key: {e}",
            files.key.display()
        ))
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        Error::msg(format!(
            "TLS private key {} does not belong to the certificate {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    Ok(certified)
}

/// Every certificate in the PEM file at `path` (at least one).
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let fail = |why: String| Error::msg(format!("TLS {what} {}: {why}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_problem(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_problem(e)))?;
    if certs.is_empty() {
        return Err(fail(
            "no certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
        ));
    }
    Ok(certs)
}

fn pem_problem(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind in the file".to_string()
        }
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read it: {io}"),
        other => format!("not valid PEM: {other:?}"),
    }
}
