//! The HTTP types patron describes for the OpenAPI document: `Json<T>`,
//! `Form<T>`, `Query<T>` and `Path<T>` arguments, text and byte bodies, and
//! the responses `Json<T>`, `String`, `&str`, `Bytes`, `Html<T>`, `()` and
//! `StatusCode`. The probe, the fallback and the collected operation are in
//! `crate::describe`.

#[cfg(feature = "openapi")]
mod described {
    use axum::extract::{Form, Path, Query};
    use axum::response::Html;
    use axum::{Json, body::Bytes};
    use http::StatusCode;
    use serde_json::{Value, json};

    use crate::describe::{Operation, Probe, Schema};

    impl Operation<'_> {
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
