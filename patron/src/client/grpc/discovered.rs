//! A channel to a discovered service (`http://{service}.discover`): tonic's
//! balanced channel, fed the service's instances that registered a gRPC
//! port as the registry lists them.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{ClientTlsConfig, Endpoint};

/// How each discovered instance's endpoint is set up.
pub(super) struct Template {
    pub(super) https: bool,
    pub(super) timeout: Option<Duration>,
    pub(super) connect_timeout: Option<Duration>,
    pub(super) tls: Option<ClientTlsConfig>,
}

impl Template {
    fn endpoint(&self, instance: &crate::discovery::Instance, port: u16) -> Option<Endpoint> {
        let host = match instance.address.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]"),
            Err(_) => instance.address.clone(),
        };
        let scheme = if self.https { "https" } else { "http" };
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

/// Feeds tonic's balanced channel the service's instances that have a
/// gRPC port, as the registry lists them, until the channel is dropped.
pub(super) async fn follow(
    discovery: crate::discovery::Discovery,
    service: String,
    template: Template,
    changes: tokio::sync::mpsc::Sender<tonic::transport::channel::Change<String, Endpoint>>,
) {
    use tonic::transport::channel::Change;
    let mut instances = loop {
        match discovery.subscribe(&service).await {
            Ok(rx) => break rx,
            Err(e) => {
                tracing::warn!(service = %service, error = %e, "cannot look the gRPC service up; trying again");
                tokio::select! {
                    _ = changes.closed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut current: std::collections::HashMap<String, u16> = std::collections::HashMap::new();
    loop {
        let listed = Arc::clone(&instances.borrow_and_update());
        let wanted: std::collections::HashMap<String, (u16, &crate::discovery::Instance)> = listed
            .iter()
            .filter_map(|i| i.grpc_port.map(|p| (i.id.clone(), (p, i))))
            .collect();
        let gone: Vec<String> = current
            .iter()
            .filter(|(id, port)| wanted.get(*id).map(|(p, _)| p) != Some(*port))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            current.remove(&id);
            if changes.send(Change::Remove(id)).await.is_err() {
                return;
            }
        }
        for (id, (port, instance)) in &wanted {
            if current.get(id) == Some(port) {
                continue;
            }
            let Some(endpoint) = template.endpoint(instance, *port) else {
                tracing::warn!(service = %service, address = %instance.address, "instance address is not a usable gRPC target; skipped");
                continue;
            };
            current.insert(id.clone(), *port);
            if changes
                .send(Change::Insert(id.clone(), endpoint))
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::select! {
            changed = instances.changed() => if changed.is_err() { return },
            _ = changes.closed() => return,
        }
    }
}
