//! Contracts built from the registry: the OpenAPI document of the routes a
//! service serves (feature `openapi`), served at `/openapi.json`.

#[cfg(feature = "openapi")]
pub(crate) mod openapi;
