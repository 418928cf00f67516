//! The TLS files of a server, from `PATRON_<SERVER>_TLS_CERT`, `…_KEY` and
//! (for client certificates) `…_CLIENT_CA`. Only the paths are read here;
//! the files are loaded — and their problems reported — when the server
//! starts, and again on SIGHUP.

use std::path::PathBuf;

use super::{ConfigError, invalid};

/// PEM files a server serves TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these
    /// CAs (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The TLS files named by `{prefix}_TLS_CERT`, `{prefix}_TLS_KEY` and
/// `{prefix}_TLS_CLIENT_CA`: `None` when the first two are unset; an error
/// when only one of them is, or the client CA comes without them.
pub(crate) fn from_vars(
    get: impl Fn(&str) -> Option<String>,
    prefix: &str,
) -> Result<Option<TlsFiles>, ConfigError> {
    let (cert_var, key_var, ca_var) = (
        format!("{prefix}_TLS_CERT"),
        format!("{prefix}_TLS_KEY"),
        format!("{prefix}_TLS_CLIENT_CA"),
    );
    let path = |v: String| PathBuf::from(v.trim());
    match (get(&cert_var), get(&key_var), get(&ca_var)) {
        (Some(cert), Some(key), ca) => Ok(Some(TlsFiles {
            cert: path(cert),
            key: path(key),
            client_ca: ca.map(path),
        })),
        (None, None, None) => Ok(None),
        (Some(cert), None, _) => Err(invalid(
            &cert_var,
            &cert,
            &format!("a certificate together with {key_var} (its private key), which is not set"),
        )),
        (None, Some(key), _) => Err(invalid(
            &key_var,
            &key,
            &format!("a private key together with {cert_var} (its certificate), which is not set"),
        )),
        (None, None, Some(ca)) => Err(invalid(
            &ca_var,
            &ca,
            &format!("client certificates only with TLS on: set {cert_var} and {key_var} too"),
        )),
    }
}
