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

# What the Dockerfile `patron new` writes passes to cargo: every crate built
# with v0 symbol names, the names scripts/hot-text records and the patterns
# of patron-cli/templates/link/hot-text.ld match (docs/deploy.md).
V0_NAMES=(--config 'build.rustflags=["-Csymbol-mangling-version=v0"]')

# relinked_v0 EXAMPLE OUT RUSTC-ARGS...: as `relinked`, every crate built
# with v0 symbol names (V0_NAMES), in a target directory of their own
# (target/v0), so that target/release keeps the plain build.
relinked_v0() {
  local example=$1 out=$2
  shift 2
  CARGO_TARGET_DIR=target/v0 cargo rustc --release -j2 -q -p examples --no-default-features \
    "${V0_NAMES[@]}" --example "$example" -- "$@"
  cp "target/v0/release/examples/$example" "$out"
}
