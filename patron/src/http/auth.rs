//! Route authentication: the [`Authenticator`] trait and the [`ApiKey`]
//! authenticator of Go Patron (`Authorization: Apikey <key>`).

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;
use crate::error::Error;

/// Decides whether a request may reach a route declared with `auth = T`.
///
/// The service must `provide` a value of the type; a route whose
/// authenticator is missing stops start-up. `Ok(true)` lets the request
/// through, `Ok(false)` answers 401 with `WWW-Authenticate` set to
/// [`challenge`](Authenticator::challenge), and `Err` answers 500.
///
/// ```
/// use patron::prelude::*;
/// use patron::http::Authenticator;
///
/// struct Internal;
///
/// impl Authenticator for Internal {
///     async fn authenticate(&self, request: &http::request::Parts) -> patron::Result<bool> {
///         Ok(request.headers.get("x-internal").is_some_and(|v| v == "yes"))
///     }
/// }
///
/// #[patron::route(GET "/internal", auth = Internal)]
/// async fn internal() -> &'static str { "secret" }
/// # fn main() {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a patron authenticator",
    label = "used as `auth = …` here",
    note = "implement `patron::http::Authenticator` for `{Self}`, or use `patron::http::ApiKey`"
)]
pub trait Authenticator: Send + Sync + 'static {
    /// Whether the request, seen through its head, is allowed.
    fn authenticate(&self, request: &Parts) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The `WWW-Authenticate` challenge sent with a 401.
    fn challenge(&self) -> &str {
        "Bearer"
    }
}

/// API-key authentication: `Authorization: Apikey <key>`, the scheme
/// matched case-insensitively and keys compared in constant time.
///
/// ```
/// use patron::http::ApiKey;
/// let auth = ApiKey::new(["k1", "k2"]);
/// assert_eq!(format!("{auth:?}"), "ApiKey { keys: 2 }");
/// ```
#[derive(Clone)]
pub struct ApiKey {
    keys: Arc<[Box<[u8]>]>,
}

impl ApiKey {
    /// Accepts any of `keys`. Blank keys are ignored; with none left every
    /// request is refused.
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let keys: Vec<Box<[u8]>> = keys
            .into_iter()
            .map(|k| k.as_ref().trim().as_bytes().to_vec())
            .filter(|k| !k.is_empty())
            .map(Vec::into_boxed_slice)
            .collect();
        ApiKey { keys: keys.into() }
    }

    /// Reads comma-separated keys from the environment variable `var`. A
    /// missing or empty variable is an error that names it.
    pub fn from_env(var: &str) -> Result<Self, ConfigError> {
        let missing = || ConfigError::Missing {
            var: var.to_string(),
            expected: "a comma-separated list of API keys".to_string(),
        };
        let value = std::env::var(var).map_err(|_| missing())?;
        let auth = ApiKey::new(value.split(','));
        if auth.keys.is_empty() {
            return Err(missing());
        }
        Ok(auth)
    }

    /// Whether `presented` is one of the keys (constant time per key).
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0u8);
        for key in self.keys.iter() {
            found |= key.as_ref().ct_eq(presented);
        }
        bool::from(found)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Authenticator for ApiKey {
    async fn authenticate(&self, request: &Parts) -> Result<bool, Error> {
        let Some(value) = request.headers.get(header::AUTHORIZATION) else {
            return Ok(false);
        };
        let value = value.as_bytes();
        let Some(space) = value.iter().position(|b| *b == b' ') else {
            return Ok(false);
        };
        let (scheme, rest) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"apikey") {
            return Ok(false);
        }
        Ok(self.accepts(rest.trim_ascii()))
    }

    fn challenge(&self) -> &str {
        "Apikey"
    }
}

/// The middleware `auth = A` installs.
pub(crate) async fn authenticate<A: Authenticator>(
    State(auth): State<Arc<A>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match auth.authenticate(&parts).await {
        Ok(true) => next.run(Request::from_parts(parts, body)).await,
        Ok(false) => {
            let mut response =
                Error::unauthorized("missing or invalid credentials").into_response();
            let challenge = HeaderValue::from_str(auth.challenge())
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
            response
        }
        Err(err) => err
            .with_status(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = http::Request::builder();
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn api_key_scheme_is_case_insensitive() {
        let auth = ApiKey::new(["s3cret"]);
        assert!(
            auth.authenticate(&parts(Some("Apikey s3cret")))
                .await
                .unwrap()
        );
        assert!(
            auth.authenticate(&parts(Some("APIKEY s3cret")))
                .await
                .unwrap()
        );
        assert!(
            !auth
                .authenticate(&parts(Some("Bearer s3cret")))
                .await
                .unwrap()
        );
        assert!(
            !auth
                .authenticate(&parts(Some("Apikey wrong")))
                .await
                .unwrap()
        );
        assert!(!auth.authenticate(&parts(Some("Apikey"))).await.unwrap());
        assert!(!auth.authenticate(&parts(None)).await.unwrap());
    }

    #[test]
    fn from_env_requires_a_value() {
        let err = ApiKey::from_env("PATRON_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(err.to_string().contains("PATRON_TEST_SURELY_UNSET_VAR"));
    }
}
