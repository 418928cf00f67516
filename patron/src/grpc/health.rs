//! The standard `grpc.health.v1.Health` service, following the service's
//! readiness: every registered service (and the whole server, `""`) is
//! SERVING while `GET /ready` would answer 200 and NOT_SERVING otherwise,
//! and NOT_SERVING from the shutdown signal on.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::http::builtin::Management;

/// How often readiness is evaluated for the health service. Each
/// evaluation runs the service's readiness checks, as a `GET /ready` does.
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The health service's state and the services it reports on.
pub(crate) struct Health {
    pub reporter: HealthReporter,
    /// Every registered service's name, and `""` for the server.
    pub names: Vec<&'static str>,
}

impl Health {
    async fn set(&self, status: ServingStatus) {
        for name in &self.names {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Follows readiness until `draining` fires, then reports NOT_SERVING
    /// for everything and returns.
    pub(crate) async fn follow(self, management: Arc<Management>, draining: CancellationToken) {
        let mut last = None;
        loop {
            let status = tokio::select! {
                biased;
                _ = draining.cancelled() => break,
                ready = management.is_ready() => if ready {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                },
            };
            if last != Some(status) {
                tracing::debug!(status = ?status, "gRPC health status changed");
                self.set(status).await;
                last = Some(status);
            }
            tokio::select! {
                _ = draining.cancelled() => break,
                _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
        }
        self.set(ServingStatus::NotServing).await;
    }
}
