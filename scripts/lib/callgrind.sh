# Sourced by the HTTP callgrind benchmarks (bench-http-callgrind, bench-log,
# bench-link-order) and scripts/hot-text.

# callgrind_start OUT PORT BINARY ENV: runs BINARY (with the NAME=value
# words ENV) under callgrind, its profile in OUT and its output in OUT.log,
# and waits until it answers /index (with any status); exits the script,
# showing that output, when it has not within 30 s. Its pid is in
# CALLGRIND_PID. CALLGRIND_OPTIONS, when set, holds more valgrind options.
callgrind_start() {
  local out=$1 port=$2 binary=$3 env=$4
  # shellcheck disable=SC2086 # $env and the options are lists of words
  env $env PATRON_HTTP_DEFAULT_PORT="$port" PATRON_HTTP_HOST=127.0.0.1 \
    valgrind --tool=callgrind ${CALLGRIND_OPTIONS:-} --callgrind-out-file="$out" \
    "$binary" >"$out.log" 2>&1 &
  CALLGRIND_PID=$!
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$port/index" && return 0
    sleep 0.1
  done
  kill -TERM "$CALLGRIND_PID" || true
  echo "$binary under callgrind did not answer within 30 s:" >&2
  cat "$out.log" >&2
  exit 1
}

# callgrind_stop: stops what callgrind_start started with SIGTERM, and
# waits for its profile.
callgrind_stop() {
  kill -TERM "$CALLGRIND_PID"
  wait "$CALLGRIND_PID" || true
}

# callgrind_serve OUT PORT BINARY ENV N PATH [h2load options...]:
# callgrind_start, then one h2load client sends N keep-alive requests to
# PATH, then callgrind_stop.
callgrind_serve() {
  local out=$1 port=$2 binary=$3 env=$4 n=$5 path=$6
  shift 6
  callgrind_start "$out" "$port" "$binary" "$env"
  h2load --h1 -c 1 -n "$n" "$@" "http://127.0.0.1:$port$path" >/dev/null
  callgrind_stop
}

# callgrind_total OUT: the total instructions of profile OUT.
callgrind_total() { awk '/^summary:/ { print $2 }' "$1"; }
