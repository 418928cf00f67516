//! Contracts built from the registry (feature `openapi`): the OpenAPI
//! document of the routes a service serves, at `/openapi.json`, and the
//! AsyncAPI document of the consumers it runs, at `/asyncapi.json`.

#[cfg(feature = "openapi")]
pub(crate) mod asyncapi;
#[cfg(feature = "openapi")]
pub(crate) mod openapi;
