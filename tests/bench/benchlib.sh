# benchlib.sh - shell helpers shared by the h2load benchmarks (sourced).
# The caller sets BENCH_NAME (for messages); FAILS counts note_fail calls.

FAILS=0
note_fail() { echo "  FAIL: $*"; FAILS=$((FAILS + 1)); }

# wait_addr LOGFILE PID: print the HOST:PORT a server logged in its
# `listening addr=` line (ctxd and the reference servers both log one; not
# ctxd's `metrics-listening addr=`);
# fail with the log if the server exits or 30 s pass first.
wait_addr() {
  local i
  for i in $(seq 1 300); do
    if grep -q '[ =]listening addr=' "$1" 2>/dev/null; then
      sed -n 's/.*[ =]listening addr=\([^ ]*\).*/\1/p' "$1" | head -1
      return 0
    fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "$BENCH_NAME: server did not start; log:" >&2
  cat "$1" >&2
  return 1
}

# nghttp_ok ADDR PATH REQFILE: one call through nghttp; succeeds when the
# response has a DATA frame followed by trailers with grpc-status: 0 (h2load
# only sees HTTP status, and gRPC errors are HTTP 200). Prints the relevant
# frames on failure. Without nghttp installed it succeeds and says so once.
nghttp_ok() {
  if ! command -v nghttp >/dev/null; then
    [ -n "${NGHTTP_WARNED:-}" ] || echo "  (nghttp not installed: trailer checks skipped)"
    NGHTTP_WARNED=1
    return 0
  fi
  local out
  out=$(nghttp -v -d "$3" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://$1$2" 2>&1 | tr -d '\000' || true)
  if echo "$out" | grep -a -q 'recv DATA frame' &&
     echo "$out" | grep -a -A1000 'recv DATA frame' | grep -a -q 'grpc-status: 0'; then
    return 0
  fi
  echo "$out" | grep -a -E 'status|DATA|HEADERS' | head -20 | sed 's/^/    /'
  return 1
}

# bench_workdir: WORK = a fresh /tmp/ctxd-bench-$BENCH_NAME.XXXXXX; on exit
# the PIDs in BENCH_PIDS are killed and WORK removed (kept with KEEP=1, for
# a post mortem: ctxd.log and what the script wrote there).
BENCH_PIDS=()
bench_cleanup() {
  local p
  for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "$BENCH_NAME: kept $WORK" >&2
  else rm -rf "$WORK"; fi
}
bench_workdir() {
  WORK=$(mktemp -d "/tmp/ctxd-bench-$BENCH_NAME.XXXXXX")
  trap bench_cleanup EXIT
}

# start_ctxd CTXD [OPTION...]: ctxd on loopback (gRPC and metrics on free
# ports), data and log (ctxd.log) under WORK, many fds allowed; sets DPID,
# ADDR (gRPC) and MADDR (metrics) once it listens.
start_ctxd() {
  ulimit -n 65536 2>/dev/null || true
  "$@" --listen 127.0.0.1:0 --data "$WORK/data" --metrics.listen 127.0.0.1:0 \
    2> "$WORK/ctxd.log" &
  DPID=$!
  BENCH_PIDS+=("$DPID")
  ADDR=$(wait_addr "$WORK/ctxd.log" "$DPID")
  MADDR=$(sed -n 's/.*metrics-listening addr=\([^ ]*\).*/\1/p' "$WORK/ctxd.log" | head -1)
}
