//! Attribute macros for [patron](https://docs.rs/patron). Use them through the
//! re-exports `patron::route`, `patron::consumer` and `patron::main`; this crate has no runtime
//! dependency and emits code that names only `::patron::__private`.
//!
//! Every argument error is a compile error placed on the offending token with a
//! sentence that says how to fix it. The macros never panic.

#![warn(missing_docs)]

mod args;
mod consumer;
mod entry;
mod grpc;
mod producer;
mod route;
mod sig;
use patron_units as units;

use proc_macro::TokenStream;

/// Registers an `async fn` as an HTTP route of the service. See `patron::route`
/// for the grammar and examples.
#[proc_macro_attribute]
pub fn route(attr: TokenStream, item: TokenStream) -> TokenStream {
    route::expand(attr.into(), item.into()).into()
}

/// Registers the `impl` of a tonic service trait as a gRPC service of the
/// service. See `patron::grpc`.
#[proc_macro_attribute]
pub fn grpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    grpc::expand(attr.into(), item.into()).into()
}

/// Turns `async fn main` into a patron service entry point. See `patron::main`.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(attr.into(), item.into()).into()
}

/// Registers an `async fn` as a message consumer. See `patron::consumer` for
/// the grammar and examples.
#[proc_macro_attribute]
pub fn consumer(attr: TokenStream, item: TokenStream) -> TokenStream {
    consumer::expand(attr.into(), item.into()).into()
}

/// Declares what the service publishes, for its AsyncAPI document. See
/// `patron::producer!`.
#[proc_macro]
pub fn producer(input: TokenStream) -> TokenStream {
    producer::expand(input.into()).into()
}
