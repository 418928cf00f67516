//! The consumer registry: what `#[patron::consumer]` submits through
//! `inventory`, and the collection of it at start-up.

use super::memory::InMemoryConsumer;
use crate::component::{BoxedComponent, Component};
use crate::deps::DepSpec;

/// One consumer, as registered by `#[patron::consumer]`.
#[doc(hidden)]
pub struct ConsumerDef {
    /// `amqp`, `kafka` or `sqs`.
    pub broker: &'static str,
    /// The queue or topic, as written.
    pub destination: &'static str,
    /// The handler function's name; also the consumer's name.
    pub handler: &'static str,
    /// `module_path!()` of the handler.
    pub module: &'static str,
    /// `file!()` of the handler.
    pub file: &'static str,
    /// `line!()` of the handler's name.
    pub line: u32,
    /// The `Dep<T>` arguments.
    pub deps: &'static [DepSpec],
    /// Builds the consumer component.
    pub build: fn() -> BuiltConsumer,
    /// Describes the message payload (its content type and schema) for the
    /// AsyncAPI document.
    pub payload: fn(&mut crate::describe::Payload<'_>),
}

/// A registered consumer, built: the component a service runs, and its
/// in-memory form for `patron::test::Broker` (or why it has none).
#[doc(hidden)]
pub struct BuiltConsumer {
    pub(crate) component: BoxedComponent,
    pub(crate) memory: Result<InMemoryConsumer, crate::Error>,
}

impl BuiltConsumer {
    /// `component`, with its in-memory form.
    pub fn new<C: Component>(component: C, memory: Result<InMemoryConsumer, crate::Error>) -> Self {
        BuiltConsumer {
            component: BoxedComponent::new(component),
            memory,
        }
    }
}

impl ConsumerDef {
    /// `file:line` of the handler.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// `module::handler`.
    pub fn qualified_handler(&self) -> String {
        format!("{}::{}", self.module, self.handler)
    }
}

impl std::fmt::Debug for ConsumerDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerDef")
            .field("broker", &self.broker)
            .field("destination", &self.destination)
            .field("handler", &self.qualified_handler())
            .field("location", &self.location())
            .finish()
    }
}

inventory::collect!(ConsumerDef);

/// Every consumer linked into this binary, ordered by handler location.
pub fn consumers() -> Vec<&'static ConsumerDef> {
    let mut all: Vec<&'static ConsumerDef> = inventory::iter::<ConsumerDef>.into_iter().collect();
    all.sort_by(|a, b| (a.file, a.line).cmp(&(b.file, b.line)));
    all
}
