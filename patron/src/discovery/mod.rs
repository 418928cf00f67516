//! Service discovery (feature `discovery`): with `PATRON_DISCOVERY` set,
//! the service registers itself in the registry once it is ready, keeps the
//! registration alive only while `/ready` would answer 200, and removes it
//! at the shutdown signal, before connections drain — so callers stop
//! picking it before its listener closes. A crashed instance drops out when
//! its registration expires (`PATRON_DISCOVERY_TTL`). [`Discovery::resolve`]
//! lists the registered instances of a service.
//!
//! The registry is etcd (`etcd://host:2379`): each instance is a key
//! `patron/services/{name}/{id}` holding its [`Instance`] as JSON, attached
//! to a lease of the TTL.

mod etcd;
pub(crate) mod registration;

use serde::{Deserialize, Serialize};

pub use etcd::{Etcd, EtcdError};

use crate::config::{DiscoveryBackend, DiscoveryConfig};

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service's name.
    pub service: String,
    /// This instance's id (unique per process start).
    pub id: String,
    /// The host or IP it is reached at.
    pub address: String,
    /// Its HTTP port.
    pub http_port: u16,
    /// Its gRPC port, when it serves gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_port: Option<u16>,
    /// The service's version.
    pub version: String,
}

/// A registry to look services up in.
#[derive(Debug, Clone)]
pub struct Discovery {
    etcd: Etcd,
}

/// The key prefix of a service's instances.
fn prefix(service: &str) -> String {
    format!("patron/services/{service}/")
}

impl Discovery {
    /// The registry `config` names.
    pub fn new(config: &DiscoveryConfig) -> Discovery {
        match &config.backend {
            DiscoveryBackend::Etcd(endpoints) => Discovery {
                etcd: Etcd::new(endpoints.clone()),
            },
        }
    }

    /// The instances of `service` registered now (entries that do not
    /// parse are skipped).
    pub async fn resolve(&self, service: &str) -> Result<Vec<Instance>, EtcdError> {
        let values = self.etcd.prefixed(&prefix(service)).await?;
        Ok(values
            .iter()
            .filter_map(|v| serde_json::from_slice(v).ok())
            .collect())
    }
}
