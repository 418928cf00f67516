//! What every consumer is configured with, whatever its broker — name,
//! concurrency, retries, backoff, failure strategy, DLQ — and the builder
//! methods that set it, written once for all brokers.

use std::time::Duration;

use super::policy::{OnFailure, Policy};
use crate::component::ComponentInfo;

/// The broker-independent settings of one consumer.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub name: String,
    pub concurrency: usize,
    pub retries: u32,
    pub max_deliveries: u32,
    pub backoff: Duration,
    /// `None` until set: each broker has its own default.
    pub on_failure: Option<OnFailure>,
    pub dlq: Option<String>,
}

impl Common {
    /// Adds the delivery settings to a consumer's description (`/info`,
    /// the AsyncAPI document).
    pub(crate) fn describe(&self, info: ComponentInfo) -> ComponentInfo {
        let mut info = info
            .detail("concurrency", self.concurrency)
            .detail("retries", self.retries)
            .detail(
                "backoff",
                humantime::format_duration(self.backoff).to_string(),
            );
        if let Some(on_failure) = self.on_failure {
            info = info.detail("on_failure", on_failure.as_str());
        }
        if let Some(dlq) = &self.dlq {
            info = info.detail("dlq", dlq.as_str());
        }
        info
    }

    pub(crate) fn new(name: impl Into<String>) -> Self {
        let defaults = Policy::default();
        Common {
            name: name.into(),
            concurrency: 1,
            retries: defaults.retries,
            max_deliveries: defaults.max_deliveries,
            backoff: defaults.backoff,
            on_failure: None,
            dlq: None,
        }
    }

    /// The policy in effect: `on_failure` as set, else `dlq` when a DLQ is
    /// named, else `without_dlq`; a `dlq` strategy without a DLQ name gets
    /// `default_dlq`, or is an error when the broker has no default. Also
    /// checks `concurrency`.
    pub(crate) fn policy(
        &self,
        without_dlq: OnFailure,
        default_dlq: Option<String>,
    ) -> Result<Policy, String> {
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        let on_failure = self.on_failure.unwrap_or(if self.dlq.is_some() {
            OnFailure::Dlq
        } else {
            without_dlq
        });
        let dlq = match (&self.dlq, on_failure) {
            (None, OnFailure::Dlq) => {
                Some(default_dlq.ok_or_else(|| "on_failure = dlq needs a DLQ name".to_string())?)
            }
            (dlq, _) => dlq.clone(),
        };
        Ok(Policy {
            retries: self.retries,
            max_deliveries: self.max_deliveries,
            backoff: self.backoff,
            on_failure,
            dlq,
        })
    }

    /// Applies what a consumer attribute wrote; unset values stay as they are.
    pub(crate) fn apply(&mut self, spec: &CommonSpec) {
        self.name = spec.name.to_string();
        if let Some(n) = spec.concurrency {
            self.concurrency = n;
        }
        if let Some(n) = spec.retries {
            self.retries = n;
        }
        if let Some(n) = spec.max_deliveries {
            self.max_deliveries = n;
        }
        if let Some(d) = spec.backoff {
            self.backoff = d;
        }
        if spec.on_failure.is_some() {
            self.on_failure = spec.on_failure;
        }
        if let Some(dlq) = spec.dlq {
            self.dlq = Some(dlq.to_string());
        }
    }
}

/// What every `#[patron::consumer]` says, whatever the broker: the
/// generated code fills it in (through `__private`), and
/// `Common::apply` lays it over the defaults.
pub struct CommonSpec {
    /// The handler's name.
    pub name: &'static str,
    /// `concurrency`.
    pub concurrency: Option<usize>,
    /// `retries`.
    pub retries: Option<u32>,
    /// `max_deliveries`.
    pub max_deliveries: Option<u32>,
    /// `backoff`.
    pub backoff: Option<Duration>,
    /// `on_failure`.
    pub on_failure: Option<OnFailure>,
    /// `dlq`.
    pub dlq: Option<&'static str>,
}

/// The builder methods every consumer type has, over its `common` field.
/// `$unit` names what `concurrency` counts, `$on_failure` and `$dlq` document
/// the broker's defaults.
macro_rules! common_builders {
    (unit: $unit:literal, on_failure: $on_failure:literal, dlq: $dlq:literal) => {
        /// The consumer's name in logs, metrics and `/ready` (the handler's
        /// name for `#[patron::consumer]`).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.common.name = name.into();
            self
        }

        #[doc = concat!("How many ", $unit, " are handled at once (1).")]
        pub fn concurrency(mut self, concurrency: usize) -> Self {
            self.common.concurrency = concurrency;
            self
        }

        /// In-process retries after a failed call (3).
        pub fn retries(mut self, retries: u32) -> Self {
            self.common.retries = retries;
            self
        }

        /// How many times one message may be delivered, counted across
        /// redeliveries by the broker (10; 0 for no limit). A message that
        /// would be given back (`requeue`, `exit`) on its last allowed
        /// delivery, or that arrives past it, goes to the DLQ when one is
        /// named and is dropped with an ERROR line otherwise, so that an
        /// always-failing message cannot loop for ever.
        pub fn max_deliveries(mut self, max_deliveries: u32) -> Self {
            self.common.max_deliveries = max_deliveries;
            self
        }

        /// Base delay between retries (100ms), doubled each retry, with jitter.
        pub fn backoff(mut self, backoff: std::time::Duration) -> Self {
            self.common.backoff = backoff;
            self
        }

        #[doc = concat!("What happens after the last retry (", $on_failure, ").")]
        pub fn on_failure(mut self, on_failure: $crate::consumer::OnFailure) -> Self {
            self.common.on_failure = Some(on_failure);
            self
        }

        #[doc = concat!("The dead-letter destination (", $dlq, ").")]
        pub fn dlq(mut self, dlq: impl Into<String>) -> Self {
            self.common.dlq = Some(dlq.into());
            self
        }

        /// The broker-independent settings, for generated code.
        pub(crate) fn common_mut(&mut self) -> &mut $crate::consumer::common::Common {
            &mut self.common
        }
    };
}

#[cfg_attr(
    not(any(feature = "amqp", feature = "sqs", feature = "kafka")),
    allow(unused_imports)
)]
pub(crate) use common_builders;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_dlq_and_the_broker() {
        let mut c = Common::new("orders");
        let default = || Some("orders.dlq".to_string());
        let p = c.policy(OnFailure::Requeue, default()).unwrap();
        assert_eq!((p.on_failure, p.dlq), (OnFailure::Requeue, None));
        c.dlq = Some("dead".into());
        let p = c.policy(OnFailure::Requeue, default()).unwrap();
        assert_eq!(
            (p.on_failure, p.dlq.as_deref()),
            (OnFailure::Dlq, Some("dead"))
        );
        c.dlq = None;
        c.on_failure = Some(OnFailure::Dlq);
        let p = c.policy(OnFailure::Exit, default()).unwrap();
        assert_eq!(p.dlq.as_deref(), Some("orders.dlq"));
        assert!(
            c.policy(OnFailure::Exit, None)
                .unwrap_err()
                .contains("needs a DLQ")
        );
        c.concurrency = 0;
        assert!(
            c.policy(OnFailure::Exit, default())
                .unwrap_err()
                .contains("concurrency")
        );
    }
}
