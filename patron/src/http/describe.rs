//! What a route handler's argument and return types say about its request
//! and response, for the OpenAPI document (feature `openapi`).
//!
//! `#[patron::route]` emits, per route, a function that calls
//! `Probe::<T>::new().describe_arg(op)` for each argument type and
//! `describe_output` for the return type. For the extractors and responses
//! patron knows (`Json<T>`, `Form<T>`, `Query<T>`, `Path<T>`, `String`,
//! `Bytes`, …) the call resolves to an inherent method here, whose
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
        note = "patron's `openapi` feature describes request and response bodies, queries and path parameters by their JSON schema",
        note = "derive it: add `schemars = \"1\"` to your dependencies and `#[derive(schemars::JsonSchema)]` to `{Self}`, or leave this route out of the document with `openapi = false` in its `#[patron::route(…)]`"
    )
)]
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

/// A media type's schema, as the document will hold it.
#[cfg(feature = "openapi")]
pub type Content = serde_json::Value;
/// A media type's schema (nothing without the `openapi` feature).
#[cfg(not(feature = "openapi"))]
pub type Content = ();

#[cfg(feature = "openapi")]
pub(crate) use described::OperationParts;

#[cfg(feature = "openapi")]
mod described {
    use axum::extract::{Form, Path, Query};
    use axum::response::Html;
    use axum::{Json, body::Bytes};
    use http::StatusCode;
    use schemars::SchemaGenerator;
    use serde_json::{Value, json};

    use super::{Operation, Probe, Schema};

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

        fn body(&mut self, media: &'static str, schema: Value) {
            self.parts.body = Some((media, schema));
        }
    }

    fn text() -> Value {
        json!({ "type": "string" })
    }

    fn binary() -> Value {
        json!({ "contentMediaType": "application/octet-stream" })
    }

    impl<T> Probe<Json<T>> {
        /// A JSON request body of `T`'s schema.
        pub fn describe_arg(&self, op: &mut Operation<'_>)
        where
            T: Schema,
        {
            let schema = T::schema(op.parts.requests);
            op.body("application/json", schema);
        }

        /// A JSON response of `T`'s schema.
        pub fn describe_output(&self, op: &mut Operation<'_>, status: &'static str)
        where
            T: Schema,
        {
            let schema = T::schema(op.parts.responses);
            op.respond(status, Some(("application/json", schema)));
        }
    }

    impl<T> Probe<Form<T>> {
        /// A URL-encoded form body of `T`'s schema.
        pub fn describe_arg(&self, op: &mut Operation<'_>)
        where
            T: Schema,
        {
            let schema = T::schema(op.parts.requests);
            op.body("application/x-www-form-urlencoded", schema);
        }
    }

    impl<T> Probe<Query<T>> {
        /// Query parameters: the properties of `T`'s schema.
        pub fn describe_arg(&self, op: &mut Operation<'_>)
        where
            T: Schema,
        {
            op.parts.query = Some(T::schema(op.parts.requests));
        }
    }

    impl<T> Probe<Path<T>> {
        /// Path parameters: `T`'s schema (a scalar, a tuple or a struct).
        pub fn describe_arg(&self, op: &mut Operation<'_>)
        where
            T: Schema,
        {
            op.parts.path = Some(T::schema(op.parts.requests));
        }
    }

    impl Probe<String> {
        /// Any body, read as UTF-8 text.
        pub fn describe_arg(&self, op: &mut Operation<'_>) {
            op.body("text/plain", text());
        }

        /// A plain-text response.
        pub fn describe_output(&self, op: &mut Operation<'_>, status: &'static str) {
            op.respond(status, Some(("text/plain; charset=utf-8", text())));
        }
    }

    impl Probe<&'static str> {
        /// A plain-text response.
        pub fn describe_output(&self, op: &mut Operation<'_>, status: &'static str) {
            op.respond(status, Some(("text/plain; charset=utf-8", text())));
        }
    }

    impl Probe<Bytes> {
        /// Any body, as bytes.
        pub fn describe_arg(&self, op: &mut Operation<'_>) {
            op.body("application/octet-stream", binary());
        }

        /// A binary response.
        pub fn describe_output(&self, op: &mut Operation<'_>, status: &'static str) {
            op.respond(status, Some(("application/octet-stream", binary())));
        }
    }

    impl Probe<Vec<u8>> {
        /// A binary response.
        pub fn describe_output(&self, op: &mut Operation<'_>, status: &'static str) {
            op.respond(status, Some(("application/octet-stream", binary())));
        }
    }

    impl<T> Probe<Html<T>> {
        /// An HTML response.
        pub fn describe_output(&self, op: &mut Operation<'_>, status: &'static str) {
            op.respond(status, Some(("text/html; charset=utf-8", text())));
        }
    }

    impl Probe<()> {
        /// An empty `200 OK`.
        pub fn describe_output(&self, op: &mut Operation<'_>, status: &'static str) {
            op.respond(status, None);
        }
    }

    impl Probe<StatusCode> {
        /// A status chosen at run time, with no body.
        pub fn describe_output(&self, op: &mut Operation<'_>, _status: &'static str) {
            op.respond("2XX", None);
        }
    }
}
