//! Process metrics (CPU, memory, file descriptors, threads, start time),
//! read from `/proc` when scraped.
//!
//! prometheus' own `ProcessCollector` parses `/proc/stat` and
//! `/proc/self/stat` when it is built, to fix the start time. Built at
//! start-up, that ran procfs' parsers (about 36 kB of code) in every
//! service before its first request, scraped or not. [`ProcessMetrics`]
//! describes the same families up front and builds the collector at the
//! first scrape; the start time it then reads is the same.

use std::sync::OnceLock;

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::MetricFamily;

use crate::error::Error;

/// The families prometheus' `ProcessCollector` exports, with its help texts.
const FAMILIES: [(&str, &str); 7] = [
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
    ),
    ("process_open_fds", "Number of open file descriptors."),
    (
        "process_max_fds",
        "Maximum number of open file descriptors.",
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
    ),
    ("process_threads", "Number of OS threads in the process."),
];

/// The calling process' metrics, collected by prometheus'
/// `ProcessCollector` built on first scrape.
pub(crate) struct ProcessMetrics {
    descs: Vec<Desc>,
    inner: OnceLock<ProcessCollector>,
}

impl ProcessMetrics {
    pub(crate) fn new() -> Result<Self, Error> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    Vec::new(),
                    Default::default(),
                )
                .map_err(|e| Error::msg(format!("cannot describe the {name} metric: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(ProcessMetrics {
            descs,
            inner: OnceLock::new(),
        })
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.inner.get_or_init(ProcessCollector::for_self).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_what_prometheus_collector_does_without_reading_proc() {
        let lazy = ProcessMetrics::new().unwrap();
        let eager = ProcessCollector::for_self();
        let described = |c: &dyn Collector| {
            c.desc()
                .iter()
                .map(|d| (d.fq_name.clone(), d.help.clone(), d.id, d.dim_hash))
                .collect::<Vec<_>>()
        };
        assert_eq!(described(&lazy), described(&eager));
        assert!(lazy.inner.get().is_none(), "built before the first scrape");
    }

    #[test]
    fn first_scrape_collects_every_described_family() {
        let lazy = ProcessMetrics::new().unwrap();
        let families = lazy.collect();
        let names: Vec<_> = families.iter().map(|f| f.name().to_string()).collect();
        let described: Vec<_> = lazy.desc().iter().map(|d| d.fq_name.clone()).collect();
        assert_eq!(names, described);
        let start = families
            .iter()
            .find(|f| f.name() == "process_start_time_seconds")
            .map(|f| f.get_metric()[0].get_gauge().get_value())
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start > 1.0e9 && start <= now + 1.0,
            "start time {start} is a past Unix time"
        );
        assert_eq!(lazy.collect().len(), FAMILIES.len(), "a second scrape too");
    }
}
