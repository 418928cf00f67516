//! The message payloads patron describes for the AsyncAPI document:
//! `Message<T>` and `Batch<T>` of `Json<T>` (with `T`'s schema), `String`,
//! `Bytes`, `Vec<u8>` and `Protobuf<T>`. The probe and its fallback are in
//! `crate::describe`.

#[cfg(feature = "openapi")]
mod described {
    use axum::Json;
    use bytes::Bytes;
    use serde_json::json;

    use crate::consumer::{Batch, Message};
    use crate::describe::{Payload, Probe, Schema};

    /// Each payload type patron decodes, with its content type and, for
    /// JSON, the schema of what it holds.
    trait Described {
        fn describe(payload: &mut Payload<'_>);
    }

    impl Described for String {
        fn describe(payload: &mut Payload<'_>) {
            payload.set("text/plain", Some(json!({ "type": "string" })));
        }
    }

    impl Described for Bytes {
        fn describe(payload: &mut Payload<'_>) {
            payload.set("application/octet-stream", None);
        }
    }

    impl Described for Vec<u8> {
        fn describe(payload: &mut Payload<'_>) {
            payload.set("application/octet-stream", None);
        }
    }

    #[cfg(feature = "protobuf")]
    impl<T> Described for crate::consumer::Protobuf<T> {
        fn describe(payload: &mut Payload<'_>) {
            payload.set("application/protobuf", None);
        }
    }

    impl<T> Probe<Message<Json<T>>> {
        /// A JSON payload of `T`'s schema.
        pub fn describe_payload(&self, payload: &mut Payload<'_>)
        where
            T: Schema,
        {
            let schema = payload.schema_of::<T>();
            payload.set("application/json", Some(schema));
        }
    }

    impl<T> Probe<Batch<Json<T>>> {
        /// JSON payloads of `T`'s schema, taken in batches.
        pub fn describe_payload(&self, payload: &mut Payload<'_>)
        where
            T: Schema,
        {
            let schema = payload.schema_of::<T>();
            payload.set("application/json", Some(schema));
        }
    }

    macro_rules! plain {
        ($($ty:ty),*) => {$(
            impl Probe<Message<$ty>> {
                /// A payload of this type.
                pub fn describe_payload(&self, payload: &mut Payload<'_>) {
                    <$ty as Described>::describe(payload);
                }
            }

            impl Probe<Batch<$ty>> {
                /// Payloads of this type, taken in batches.
                pub fn describe_payload(&self, payload: &mut Payload<'_>) {
                    <$ty as Described>::describe(payload);
                }
            }
        )*};
    }

    plain!(String, Bytes, Vec<u8>);

    #[cfg(feature = "protobuf")]
    impl<T> Probe<Message<crate::consumer::Protobuf<T>>> {
        /// A protobuf payload.
        pub fn describe_payload(&self, payload: &mut Payload<'_>) {
            <crate::consumer::Protobuf<T> as Described>::describe(payload);
        }
    }

    #[cfg(feature = "protobuf")]
    impl<T> Probe<Batch<crate::consumer::Protobuf<T>>> {
        /// Protobuf payloads, taken in batches.
        pub fn describe_payload(&self, payload: &mut Payload<'_>) {
            <crate::consumer::Protobuf<T> as Described>::describe(payload);
        }
    }
}
