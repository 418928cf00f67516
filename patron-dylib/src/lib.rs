//! patron linked as a shared library, for faster debug rebuilds.
//!
//! A service's debug build links patron and everything it brings — the
//! HTTP server, TLS, compression, the profiler, trace export — into its
//! binary on every rebuild, so the link, not the compile, is most of the
//! wait after an edit. Naming this crate links all of that from one shared
//! library, built once, instead: the rebuild after touching a handler
//! takes about what a bare axum service's does.
//!
//! Opt in behind a feature of the service, for development only:
//!
//! ```toml
//! [features]
//! dynamic-linking = ["dep:patron-dylib"]
//!
//! [dependencies]
//! patron = "0.1"
//! patron-dylib = { version = "0.1", optional = true }
//! ```
//!
//! ```ignore
//! // src/main.rs: a crate is linked only when the code names it.
//! #[cfg(feature = "dynamic-linking")]
//! use patron_dylib as _;
//! ```
//!
//! then `cargo run --features dynamic-linking`. The code is unchanged: it
//! still uses `patron::…`, and the features enabled on `patron` are the
//! ones the library is built with.
//!
//! On Linux the library also exports librdkafka's C functions, which a
//! Kafka consumer's code calls from the service's own crate (rustc hides
//! native libraries' symbols in a `dylib`: rust-lang/rust#65610); see
//! `build.rs`.
//!
//! The binary then needs this library and Rust's `libstd` at run time.
//! `cargo run` and `cargo test` set the library path for them; run the
//! binary otherwise and `LD_LIBRARY_PATH` must name `target/debug/deps`
//! and the toolchain's `lib` directory. Build what you deploy without the
//! feature: a release build links statically, as it always has.

#![warn(missing_docs)]

#[doc(no_inline)]
pub use patron::*;
