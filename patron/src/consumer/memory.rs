//! A consumer as the in-memory test broker (`patron::test::Broker`) runs it:
//! the consumer's name, destinations, checked policy and handler, taken from
//! the real AMQP, SQS or Kafka consumer so that the policy — defaults, DLQ
//! name, delivery limit — is the one that consumer would run with.

use std::sync::Arc;

use super::batch::Handler;
use super::handler::MessageHandler;
use super::policy::Policy;
use crate::error::Error;

/// A consumer ready for the in-memory broker. Made by the broker from an
/// AMQP, SQS or Kafka consumer; not used on its own.
#[doc(hidden)]
pub struct InMemoryConsumer {
    pub(crate) name: String,
    /// The `messaging_system` label of the broker it stands in for.
    pub(crate) system: &'static str,
    pub(crate) destinations: Vec<String>,
    pub(crate) policy: Policy,
    pub(crate) handler: Arc<dyn MessageHandler>,
    /// Kafka: the broker cannot take a message back (see `Pipeline`).
    pub(crate) redelivers_in_process: bool,
}

impl std::fmt::Debug for InMemoryConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryConsumer")
            .field("name", &self.name)
            .field("system", &self.system)
            .field("destinations", &self.destinations)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl InMemoryConsumer {
    /// The in-memory form of a consumer of `destinations` whose checked
    /// policy is `policy`; `redelivers_in_process` for a broker that cannot
    /// take a message back (Kafka).
    #[cfg_attr(
        not(any(feature = "amqp", feature = "sqs", feature = "kafka")),
        allow(dead_code)
    )]
    pub(crate) fn new(
        name: &str,
        system: &'static str,
        destinations: Vec<String>,
        policy: Policy,
        handler: &Handler,
        redelivers_in_process: bool,
    ) -> Result<Self, Error> {
        let handler = match handler {
            Handler::Single(h) => Arc::clone(h),
            Handler::Batch { .. } => {
                return Err(Error::msg(format!(
                    "consumer {name}: the in-memory test broker runs handlers of one message at a time, not batch handlers; test a batch consumer against its broker"
                )));
            }
        };
        Ok(InMemoryConsumer {
            name: name.to_string(),
            system,
            destinations,
            policy,
            handler,
            redelivers_in_process,
        })
    }
}
