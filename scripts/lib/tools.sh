# Sourced by the benchmark scripts: tools they need from Debian packages.

# need_tool BIN [PACKAGE]: installs PACKAGE (default BIN) through apt when
# BIN is not on the PATH.
need_tool() {
  local bin=$1 pkg=${2:-$1}
  command -v "$bin" >/dev/null 2>&1 && return 0
  echo "installing $pkg through apt" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
}
