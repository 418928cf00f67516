# Sourced by the HTTP callgrind benchmarks (bench-http-callgrind, bench-log,
# bench-link-order).

# callgrind_serve OUT PORT BINARY ENV N PATH [h2load options...]: runs
# BINARY (with the NAME=value words ENV) under callgrind, its profile in OUT
# and its output in OUT.log, waits until it answers /index, has one h2load
# client send it N keep-alive requests to PATH, and stops it with SIGTERM.
# CALLGRIND_OPTIONS, when set, holds more valgrind options.
callgrind_serve() {
  local out=$1 port=$2 binary=$3 env=$4 n=$5 path=$6
  shift 6
  # shellcheck disable=SC2086 # $env and the options are lists of words
  env $env PATRON_HTTP_DEFAULT_PORT="$port" PATRON_HTTP_HOST=127.0.0.1 \
    valgrind --tool=callgrind ${CALLGRIND_OPTIONS:-} --callgrind-out-file="$out" \
    "$binary" >"$out.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$port/index" && break
    sleep 0.1
  done
  h2load --h1 -c 1 -n "$n" "$@" "http://127.0.0.1:$port$path" >/dev/null
  kill -TERM "$pid"
  wait "$pid" || true
}

# callgrind_total OUT: the total instructions of profile OUT.
callgrind_total() { awk '/^summary:/ { print $2 }' "$1"; }
