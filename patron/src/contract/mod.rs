//! Contracts built from the registry (feature `openapi`): the OpenAPI
//! document of the routes a service serves, at `/openapi.json`, and the
//! AsyncAPI document of the consumers it runs, at `/asyncapi.json`. Both
//! are built once at start-up; without the feature, or with
//! `PATRON_HTTP_OPENAPI=false`, there are none and their paths are free.

#[cfg(feature = "openapi")]
pub(crate) mod asyncapi;
#[cfg(feature = "openapi")]
pub(crate) mod openapi;
#[cfg(feature = "openapi")]
mod schemas;

use bytes::Bytes;

use crate::component::ComponentInfo;
use crate::config::Config;
use crate::http::registry::RouteDef;

/// The encoded documents a service serves, if any.
pub(crate) struct Documents {
    pub openapi: Option<Bytes>,
    pub asyncapi: Option<Bytes>,
}

/// The documents of `routes` and of the consumers among `components`.
#[cfg_attr(not(feature = "openapi"), allow(unused_variables))]
pub(crate) fn documents(
    config: &Config,
    name: &str,
    version: &str,
    routes: &[&'static RouteDef],
    components: &[ComponentInfo],
) -> Documents {
    #[cfg(feature = "openapi")]
    if config.http_openapi {
        let encode =
            |doc: serde_json::Value| Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        return Documents {
            openapi: Some(encode(openapi::document(name, version, routes))),
            asyncapi: asyncapi::document(
                name,
                version,
                components,
                &payloads(),
                &crate::client::produces::producers(),
            )
            .map(encode),
        };
    }
    Documents {
        openapi: None,
        asyncapi: None,
    }
}

/// The payload descriptions of the consumers `#[patron::consumer]`
/// registered, by consumer name.
#[cfg(feature = "openapi")]
fn payloads() -> Vec<crate::describe::DescribedPayload> {
    crate::consumer::registry::consumers()
        .into_iter()
        .map(|def| (def.handler, def.payload))
        .collect()
}

/// A route at a path the documents are served at, while they are.
#[cfg_attr(not(feature = "openapi"), allow(unused_variables))]
pub(crate) fn path_problems(config: &Config, routes: &[&'static RouteDef]) -> Vec<String> {
    #[cfg(feature = "openapi")]
    if config.http_openapi {
        use crate::http::builtin::{ASYNCAPI_PATH, OPENAPI_PATH};
        let taken = [OPENAPI_PATH, ASYNCAPI_PATH];
        return routes
            .iter()
            .filter(|r| taken.contains(&r.path))
            .map(|r| {
                format!(
                    "route {} at {} ({}) takes {}, where patron serves its OpenAPI and AsyncAPI documents; choose another path, or set PATRON_HTTP_OPENAPI=false to serve your own",
                    r.span_name,
                    r.location(),
                    r.qualified_handler(),
                    r.path
                )
            })
            .collect();
    }
    Vec::new()
}
