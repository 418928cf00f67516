//! A channel to a discovered service (`http://{service}.discover`): each
//! call goes to an instance with a gRPC port picked by the same balancer as
//! the HTTP client's (power of two choices, ejection after refused
//! connections), over one lazily connected tonic channel per instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::discovery::{Discovery, DiscoveryError, Instance, Picked};

/// How each discovered instance's endpoint is set up.
pub(super) struct Template {
    pub(super) https: bool,
    pub(super) timeout: Option<Duration>,
    pub(super) connect_timeout: Option<Duration>,
    pub(super) tls: Option<ClientTlsConfig>,
}

impl Template {
    fn endpoint(&self, instance: &Instance, port: u16) -> Option<Endpoint> {
        let scheme = if self.https { "https" } else { "http" };
        let host = instance.url_host();
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host}:{port}")).ok()?;
        if let Some(t) = self.timeout {
            endpoint = endpoint.timeout(t);
        }
        if let Some(t) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(t);
        }
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).ok(),
            None => Some(endpoint),
        }
    }
}

/// A discovered service's instances and a channel to each one called.
pub(super) struct Instances {
    discovery: Discovery,
    service: String,
    template: Template,
    /// By instance id: its gRPC port and the channel to it.
    channels: Mutex<HashMap<String, (u16, tonic::transport::Channel)>>,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("service", &self.service)
            .finish()
    }
}

impl Instances {
    pub(super) fn new(discovery: Discovery, service: String, template: Template) -> Instances {
        Instances {
            discovery,
            service,
            template,
            channels: Mutex::default(),
        }
    }

    /// An instance with a gRPC port not in `tried`, and the channel to it.
    pub(super) async fn pick(
        &self,
        tried: &[String],
    ) -> Result<(tonic::transport::Channel, Picked), DiscoveryError> {
        let mut skip: Vec<String> = tried.to_vec();
        loop {
            let picked = self.discovery.pick(&self.service, &skip).await?;
            let instance = picked.instance();
            let Some(port) = instance.grpc_port else {
                // Registered without gRPC: never a candidate.
                skip.extend(
                    self.discovery
                        .known(&self.service)
                        .into_iter()
                        .filter(|i| i.grpc_port.is_none())
                        .map(|i| i.id),
                );
                skip.push(instance.id.clone());
                continue;
            };
            let channel =
                self.channel(instance, port)
                    .ok_or_else(|| DiscoveryError::NoInstance {
                        service: self.service.clone(),
                        reason: format!("{}:{port} is not a usable gRPC target", instance.address),
                    })?;
            return Ok((channel, picked));
        }
    }

    fn channel(&self, instance: &Instance, port: u16) -> Option<tonic::transport::Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, channel)) = channels.get(&instance.id)
            && *p == port
        {
            return Some(channel.clone());
        }
        let channel = self.template.endpoint(instance, port)?.connect_lazy();
        channels.insert(instance.id.clone(), (port, channel.clone()));
        // Forget instances the registry no longer lists.
        let known = self.discovery.known(&self.service);
        if channels.len() > known.len() {
            channels.retain(|id, _| known.iter().any(|i| i.id == *id));
        }
        Some(channel)
    }

    /// Ready when an instance with a gRPC port is known.
    pub(super) fn ready(&self) -> Result<(), String> {
        let known = self.discovery.known(&self.service);
        if known.iter().any(|i| i.grpc_port.is_some()) {
            Ok(())
        } else {
            Err(format!(
                "no instance of the gRPC service {:?} is known ({} listed, none with a gRPC port)",
                self.service,
                known.len()
            ))
        }
    }
}
