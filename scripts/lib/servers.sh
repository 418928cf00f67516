# Sourced by the start-up benchmarks (bench-startup, bench-link-order) and
# scripts/hot-text: the release builds of the services they measure.

# build_servers: hello, bare axum and invoice (a second patron service, one
# scripts/hot-text does not record), release, on patron's default features
# (as a new service would be built).
build_servers() {
  cargo build --release -j2 -q -p examples --no-default-features \
    --example hello --example bare_axum --example invoice
}

# relinked EXAMPLE OUT RUSTC-ARGS...: the example EXAMPLE rebuilt with the
# extra rustc arguments RUSTC-ARGS (link arguments, say) through `cargo
# rustc`, so that only its crate is rebuilt, and copied to OUT. target/ then
# holds that build: call build_servers after the last relink for the plain
# one.
relinked() {
  local example=$1 out=$2
  shift 2
  cargo rustc --release -j2 -q -p examples --no-default-features --example "$example" -- "$@"
  cp "target/release/examples/$example" "$out"
}
