//! The balancer's metrics in the process-wide registry: instances known
//! per service, resolutions by outcome, ejections.

use std::sync::OnceLock;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use crate::error::Error;
use crate::observe::metrics;

/// The three families; `None` (warned once) when they cannot be registered.
pub(crate) struct Families {
    pub(crate) instances: IntGaugeVec,
    pub(crate) resolutions: IntCounterVec,
    pub(crate) ejections: IntCounterVec,
}

pub(crate) fn families() -> Option<&'static Families> {
    static FAMILIES: OnceLock<Option<Families>> = OnceLock::new();
    FAMILIES
        .get_or_init(|| {
            let m = metrics::global();
            let made = (|| {
                let instances = m.shared("discovery_instances", || {
                    IntGaugeVec::new(
                        Opts::new(
                            "discovery_instances",
                            "Healthy instances the balancer knows, by service.",
                        ),
                        &["service"],
                    )
                    .map_err(|e| Error::msg(format!("cannot create discovery_instances: {e}")))
                })?;
                let resolutions = m.shared("discovery_resolutions_total", || {
                    IntCounterVec::new(
                        Opts::new(
                            "discovery_resolutions_total",
                            "Answers from the registry about a service (lookups and watch wake-ups), by outcome (ok, error).",
                        ),
                        &["service", "outcome"],
                    )
                    .map_err(|e| {
                        Error::msg(format!("cannot create discovery_resolutions_total: {e}"))
                    })
                })?;
                let ejections = m.shared("discovery_ejections_total", || {
                    IntCounterVec::new(
                        Opts::new(
                            "discovery_ejections_total",
                            "Instances left out for a while after refusing connections, by service.",
                        ),
                        &["service"],
                    )
                    .map_err(|e| {
                        Error::msg(format!("cannot create discovery_ejections_total: {e}"))
                    })
                })?;
                Ok::<_, Error>(Families {
                    instances,
                    resolutions,
                    ejections,
                })
            })();
            made.map_err(|e| tracing::warn!(error = %e, "discovery metrics unavailable"))
                .ok()
        })
        .as_ref()
}
