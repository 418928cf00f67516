# Sourced by the start-up benchmarks (bench-startup, bench-link-order) and
# scripts/hot-text: the release builds of the services they measure.

# build_servers: hello, bare axum and invoice (a second patron service, one
# scripts/hot-text does not record), release, on patron's default features
# (as a new service would be built), in target/release.
build_servers() {
  cargo build --release -j2 -q -p examples --no-default-features \
    --example hello --example bare_axum --example invoice
}

# The `--config` the Dockerfile `patron new` writes passes to cargo: every
# crate built with v0 symbol names, the names scripts/hot-text records and
# the patterns of patron-cli/templates/link/hot-text.ld match
# (docs/deploy.md). Read from the template, so the scripts build as it does.
DOCKERFILE_CONFIG=$(sed -n "s/.*--config '\([^']*\)'.*/\1/p" patron-cli/templates/Dockerfile)
if [ -z "$DOCKERFILE_CONFIG" ]; then
  echo "patron-cli/templates/Dockerfile passes no --config to cargo" >&2
  exit 1
fi

# The link arguments that Dockerfile adds: packed relative relocations
# (glibc 2.36 or later, as its images have), and with them the linker
# script scripts/hot-text writes.
PACKED_RELOCS=(-C "link-arg=-Wl,-z,pack-relative-relocs")
DOCKERFILE_LINK=("${PACKED_RELOCS[@]}" -C "link-arg=-Wl,-T,$PWD/patron-cli/templates/link/hot-text.ld")

# amqp_from_services: PATRON_AMQP_URL, when unset, the RabbitMQ
# scripts/services starts (and starts it when it is not running).
amqp_from_services() {
  if [ -z "${PATRON_AMQP_URL:-}" ]; then
    scripts/services >/dev/null
    # shellcheck disable=SC1091
    . .cache/test-env
    export PATRON_AMQP_URL=$PATRON_TEST_AMQP_URL
  fi
}

# relinked EXAMPLE OUT RUSTC-ARGS...: the example EXAMPLE built as the
# Dockerfile builds a service (DOCKERFILE_CONFIG), on patron's default
# features plus the examples' features in RELINK_FEATURES (`amqp`, say;
# none when unset), with the extra rustc arguments RUSTC-ARGS (link
# arguments, say) through `cargo rustc`, so that only its crate is rebuilt
# between relinks, and copied to OUT. Every crate is built with those
# names, so in a target directory of their own (RELINK_TARGET_DIR,
# target/v0 when unset): target/release keeps the plain builds.
# RELINK_CARGO, when set, is the cargo command (`cargo +nightly`, say).
relinked() {
  local example=$1 out=$2 target=${RELINK_TARGET_DIR:-target/v0}
  shift 2
  # shellcheck disable=SC2086 # RELINK_CARGO is a command and its words
  CARGO_TARGET_DIR=$target ${RELINK_CARGO:-cargo} rustc --release -j2 -q -p examples \
    --no-default-features --features "${RELINK_FEATURES:-}" --config "$DOCKERFILE_CONFIG" \
    --example "$example" -- "$@"
  cp "$target/release/examples/$example" "$out"
}
