//! `Json<T>` request bodies, read as axum reads them — the same content
//! type check, body limit and rejections — with one difference: an integer
//! spelled as a whole float (`2.0`) is an integer. JSON has one number
//! type, and the JSON Schema of the OpenAPI document (2020-12) counts `2.0`
//! as an integer, so a client that writes it sends what the document
//! allows; serde alone refuses it for an integer field. The strict parse
//! runs first: a body it accepts costs nothing extra.

use std::future::Future;
use std::marker::PhantomData;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, MissingJsonContentType};
use axum::extract::{FromRequest, Request};
use http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

use super::handler::LastHandlerArg;
use crate::deps::AppState;

/// The last argument of a generated handler, probed for whether it is
/// axum's `Json<T>`. Built by the generated code only.
pub struct LastArg<T>(PhantomData<fn() -> T>);

impl<T> LastArg<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        LastArg(PhantomData)
    }
}

impl<T> Default for LastArg<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned> LastArg<Json<T>> {
    /// Reads a JSON body as axum does, taking whole floats as integers.
    pub async fn extract(self, req: Request, state: &AppState) -> Result<Json<T>, JsonRejection> {
        if !json_content_type(req.headers()) {
            return Err(MissingJsonContentType::default().into());
        }
        let bytes = Bytes::from_request(req, state).await?;
        match Json::<T>::from_bytes(&bytes) {
            Err(JsonRejection::JsonDataError(strict)) => match integral(&bytes) {
                Some(value) => T::deserialize(value)
                    .map(Json)
                    .map_err(|_| JsonRejection::JsonDataError(strict)),
                None => Err(JsonRejection::JsonDataError(strict)),
            },
            read => read,
        }
    }
}

/// Any other last argument: its extractor, as written.
pub trait OtherLastArg<T> {
    /// Extracts `T` with its own extractor.
    fn extract<M>(
        self,
        req: Request,
        state: &AppState,
    ) -> impl Future<Output = Result<T, <T as LastHandlerArg<M>>::Rejection>>
    where
        Self: Sized,
        T: LastHandlerArg<M>,
    {
        T::extract(req, state)
    }
}

impl<T> OtherLastArg<T> for LastArg<T> {}

/// `application/json` or any `+json` type, the test the request guard's
/// UTF-8 check uses too (axum's, without parsing the whole media type).
fn json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| super::body::is_json(v.as_bytes()))
}

/// The body as a JSON value with whole floats written as integers; `None`
/// when it does not parse or has no whole float to rewrite.
fn integral(bytes: &[u8]) -> Option<Value> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    rewrite(&mut value).then_some(value)
}

/// Past 2^53 a float no longer spells one integer.
const EXACT: f64 = 9_007_199_254_740_992.0;

fn rewrite(value: &mut Value) -> bool {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() <= EXACT => {
                // In range, so the cast is exact.
                *n = if f < 0.0 {
                    Number::from(f as i64)
                } else {
                    Number::from(f as u64)
                };
                true
            }
            _ => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |any, v| rewrite(v) | any),
        Value::Object(map) => map.values_mut().fold(false, |any, v| rewrite(v) | any),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_match_axums() {
        let accepts = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            json_content_type(&h)
        };
        assert!(accepts("application/json"));
        assert!(accepts("application/json; charset=utf-8"));
        assert!(accepts("application/json;charset=utf-8"));
        assert!(accepts("Application/JSON"));
        assert!(accepts("application/cloudevents+json"));
        assert!(!accepts("text/json"));
        assert!(!accepts("application/jsonx"));
        assert!(!accepts("application"));
        assert!(!json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn whole_floats_become_integers_and_nothing_else_changes() {
        let v = integral(br#"{"id": 2.0, "n": [-3.0, 1.5, 7], "s": "2.0"}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": 2, "n": [-3, 1.5, 7], "s": "2.0"})
        );
        assert!(v["id"].is_u64() && v["n"][0].is_i64());
        assert!(integral(br#"{"id": 2, "x": 1.5}"#).is_none());
        assert!(integral(b"{not json").is_none());
        assert!(integral(b"1e300").is_none());
    }
}
