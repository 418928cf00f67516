//! A throw-away PKI for TLS tests: a CA made with rcgen and certificates
//! it signs, written to a temporary directory removed on drop. No key is
//! ever committed.

use std::path::PathBuf;

use patron::config::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::unique;

/// A test CA and the files it signs, in a directory of their own.
pub struct Pki {
    dir: PathBuf,
    /// The CA, to sign more.
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA in a new directory.
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(unique("tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "patron test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `{name}.pem` and `{name}-key.pem`: a certificate for
    /// localhost and 127.0.0.1 with common name `cn`, signed by the CA.
    pub fn issue(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    pub fn files(&self, name: &str, client_ca: bool) -> TlsFiles {
        let (cert, key) = self.issue(name, name);
        TlsFiles {
            cert,
            key,
            client_ca: client_ca.then(|| self.path("ca.pem")),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
