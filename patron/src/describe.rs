//! What handler types say about the messages a service takes and answers,
//! for its OpenAPI and AsyncAPI documents (feature `openapi`).
//!
//! `#[patron::route]` emits, per route, a function that calls
//! `Probe::<T>::new().describe_arg(op)` for each argument type and
//! `describe_output` for the return type; `#[patron::consumer]` one that
//! calls `describe_payload` for its `Message<T>` or `Batch<T>`. For the
//! types patron knows (`Json<T>`, `Form<T>`, `Query<T>`, `Path<T>`,
//! `String`, `Bytes`, `Message<Json<T>>`, …) the call resolves to an
//! inherent method (in `http::describe` and `consumer::describe`), whose
//! `T: Schema` bound turns a type without a JSON schema into a compile
//! error that names the fix. Every other type (`Dep<T>`, `CorrelationId`,
//! your own extractors) falls through to the [`Undescribed`] trait's no-op
//! methods. Without the feature there are no inherent methods: every type
//! falls through, so nothing is required of the user's types.

use std::marker::PhantomData;

/// A type whose JSON schema goes into the OpenAPI document: any
/// `schemars::JsonSchema` type.
#[cfg_attr(
    feature = "openapi",
    diagnostic::on_unimplemented(
        message = "`{Self}` has no JSON schema for the service's OpenAPI document",
        label = "no `schemars::JsonSchema` impl",
        note = "patron's `openapi` feature describes request and response bodies, queries, path parameters and message payloads by their JSON schema",
        note = "derive it: add `schemars = \"1\"` to your dependencies and `#[derive(schemars::JsonSchema)]` to `{Self}`, or, for a `#[patron::route(…)]` or `#[patron::consumer(…)]`, leave it out of the document with `openapi = false`"
    )
)]
#[cfg_attr(not(feature = "openapi"), allow(dead_code))]
pub trait Schema {
    /// The type's schema, as a reference into the document's components
    /// where it is a named type.
    #[cfg(feature = "openapi")]
    fn schema(generator: &mut schemars::SchemaGenerator) -> serde_json::Value;
}

#[cfg(feature = "openapi")]
#[diagnostic::do_not_recommend]
impl<T: schemars::JsonSchema + ?Sized> Schema for T {
    fn schema(generator: &mut schemars::SchemaGenerator) -> serde_json::Value {
        // The generator's transforms run on definitions when they are taken;
        // an inline schema (`u32`, a tuple) gets them here.
        let mut schema = generator.subschema_for::<T>();
        for transform in generator.transforms_mut() {
            transform.transform(&mut schema);
        }
        schema.to_value()
    }
}

/// A handler argument or return type, probed for what it says about the
/// route. Built by the generated code only.
pub struct Probe<T: ?Sized>(PhantomData<fn() -> Box<T>>);

impl<T: ?Sized> Probe<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// What the types patron does not know add to the document: nothing.
pub trait Undescribed {
    /// A handler argument of this type reads nothing the document shows.
    fn describe_arg(&self, _op: &mut Operation<'_>) {}

    /// A return type of this type: a success of unknown status and content.
    fn describe_output(&self, op: &mut Operation<'_>, status: &'static str) {
        op.respond(status, None);
    }

    /// A consumer's message of this type: a payload of unknown content.
    fn describe_payload(&self, _payload: &mut Payload<'_>) {}
}

impl<T: ?Sized> Undescribed for Probe<T> {}

/// One route's request and response, as its types describe them.
pub struct Operation<'g> {
    #[cfg(feature = "openapi")]
    pub(crate) parts: OperationParts<'g>,
    #[cfg(not(feature = "openapi"))]
    _generators: PhantomData<&'g mut ()>,
}

impl Operation<'_> {
    /// Records the success response.
    #[cfg_attr(not(feature = "openapi"), allow(unused_variables))]
    pub fn respond(&mut self, status: &'static str, content: Option<(&'static str, Content)>) {
        #[cfg(feature = "openapi")]
        {
            self.parts.response = Some((status, content));
        }
    }
}

/// A consumer's message payload, as its type describes it.
pub struct Payload<'g> {
    #[cfg(feature = "openapi")]
    pub(crate) generator: &'g mut schemars::SchemaGenerator,
    /// The content type and, where known, the schema.
    #[cfg(feature = "openapi")]
    pub(crate) content: Option<(&'static str, Option<serde_json::Value>)>,
    #[cfg(not(feature = "openapi"))]
    _generator: PhantomData<&'g mut ()>,
}

#[cfg(feature = "openapi")]
impl<'g> Payload<'g> {
    /// A payload described with `generator`'s schemas.
    pub(crate) fn new(generator: &'g mut schemars::SchemaGenerator) -> Self {
        Payload {
            generator,
            content: None,
        }
    }

    /// Records the content type and schema.
    pub(crate) fn set(&mut self, content_type: &'static str, schema: Option<serde_json::Value>) {
        self.content = Some((content_type, schema));
    }

    /// `T`'s schema from this payload's generator.
    pub(crate) fn schema_of<T: Schema + ?Sized>(&mut self) -> serde_json::Value {
        T::schema(self.generator)
    }
}

/// A consumer's payload description, by the consumer's name.
#[cfg(feature = "openapi")]
pub(crate) type DescribedPayload = (&'static str, fn(&mut Payload<'_>));

/// A media type's schema, as the document will hold it.
#[cfg(feature = "openapi")]
pub type Content = serde_json::Value;
/// A media type's schema (nothing without the `openapi` feature).
#[cfg(not(feature = "openapi"))]
pub type Content = ();

#[cfg(feature = "openapi")]
mod parts {
    use schemars::SchemaGenerator;
    use serde_json::Value;

    use super::Operation;

    /// What the probes found, and the generators the schemas come from:
    /// request types are described as they deserialize, response types as
    /// they serialize.
    pub(crate) struct OperationParts<'g> {
        pub requests: &'g mut SchemaGenerator,
        pub responses: &'g mut SchemaGenerator,
        /// `Path<T>`'s schema.
        pub path: Option<Value>,
        /// `Query<T>`'s schema.
        pub query: Option<Value>,
        /// The body's media type and schema.
        pub body: Option<(&'static str, Value)>,
        /// The success status, and its media type and schema if known.
        pub response: Option<(&'static str, Option<(&'static str, Value)>)>,
    }

    impl<'g> Operation<'g> {
        pub(crate) fn new(
            requests: &'g mut SchemaGenerator,
            responses: &'g mut SchemaGenerator,
        ) -> Self {
            Operation {
                parts: OperationParts {
                    requests,
                    responses,
                    path: None,
                    query: None,
                    body: None,
                    response: None,
                },
            }
        }
    }
}

#[cfg(feature = "openapi")]
pub(crate) use parts::OperationParts;
