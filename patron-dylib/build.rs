//! Exports librdkafka's C functions from the shared library.
//!
//! rustc's version script for a `dylib` exports its Rust symbols and hides
//! the C symbols of native libraries linked into it
//! (rust-lang/rust#65610). rdkafka's client is generic over its context, so
//! a service that consumes from Kafka instantiates code in its own crate
//! that calls librdkafka directly (`rd_kafka_unsubscribe`, …), and with the
//! library hidden that link fails. A second version script makes those
//! symbols global; the linker merges it with rustc's, and the more
//! specific pattern wins over rustc's `local: *`.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // Version scripts are an ELF linker's: GNU ld, LLD and mold on Linux.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out.join("export.ver");
    std::fs::write(&script, "{ global: rd_kafka_*; };\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
    println!(
        "cargo::rustc-link-arg=-Wl,--version-script={}",
        script.display()
    );
}
