//! What `patron::producer!` declares: a destination the service publishes
//! to and the payload it sends there, collected through `inventory` for the
//! AsyncAPI document's `send` operations.

/// One declared producer.
#[doc(hidden)]
pub struct ProducerDef {
    /// `amqp`, `kafka` or `sqs`.
    pub broker: &'static str,
    /// The queue or topic.
    pub destination: &'static str,
    /// `module_path!()` of the declaration.
    pub module: &'static str,
    /// Describes the payload (content type and schema).
    pub payload: fn(&mut crate::describe::Payload<'_>),
}

impl std::fmt::Debug for ProducerDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerDef")
            .field("broker", &self.broker)
            .field("destination", &self.destination)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

inventory::collect!(ProducerDef);

/// Every declared producer linked into this binary, by broker and
/// destination.
#[cfg_attr(not(feature = "openapi"), allow(dead_code))]
pub fn producers() -> Vec<&'static ProducerDef> {
    let mut all: Vec<&'static ProducerDef> = inventory::iter::<ProducerDef>.into_iter().collect();
    all.sort_by_key(|p| (p.broker, p.destination, p.module));
    all
}
