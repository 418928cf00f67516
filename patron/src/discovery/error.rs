//! [`DiscoveryError`]: what a registry call or an instance pick ran into.

use crate::config::ConfigError;

/// A registry could not be reached or answered oddly, a service has no
/// instance to call, or the discovery settings are wrong.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A call to the registry failed.
    #[error("{backend} at {endpoint}: {what}: {reason}")]
    Registry {
        /// `etcd`, `consul`, `dns` or another registry's name.
        backend: &'static str,
        /// The endpoint asked (no credentials).
        endpoint: String,
        /// The call: `lease grant`, `register`, `SRV lookup`…
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The service has no healthy instance (or none the caller has not
    /// tried already).
    #[error("no instance of service {service:?} to call: {reason}")]
    NoInstance {
        /// The logical service name.
        service: String,
        /// Why: none registered, all tried, or the registry's error.
        reason: String,
    },
    /// `PATRON_DISCOVERY*` holds something not allowed.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl DiscoveryError {
    /// A failed registry call, for [`Registry`](super::Registry)
    /// implementations.
    pub fn registry(
        backend: &'static str,
        endpoint: impl Into<String>,
        what: &'static str,
        reason: impl Into<String>,
    ) -> DiscoveryError {
        DiscoveryError::Registry {
            backend,
            endpoint: endpoint.into(),
            what,
            reason: reason.into(),
        }
    }
}
