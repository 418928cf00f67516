# Sourced by the start-up benchmarks (bench-startup, bench-link-order) and
# scripts/hot-text: the release builds of hello and bare axum they measure.

# build_servers: hello and bare axum, release, on patron's default features
# (as a new service would be built).
build_servers() {
  cargo build --release -j2 -q -p examples --no-default-features --example hello --example bare_axum
}

# relinked_hello OUT RUSTC-ARGS...: hello rebuilt with the extra rustc
# arguments RUSTC-ARGS (link arguments, say) through `cargo rustc`, so that
# only hello's crate is rebuilt, and copied to OUT. target/ then holds that
# build: call build_servers after the last relink for the plain one.
relinked_hello() {
  local out=$1
  shift
  cargo rustc --release -j2 -q -p examples --no-default-features --example hello -- "$@"
  cp target/release/examples/hello "$out"
}
