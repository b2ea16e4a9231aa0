#!/bin/bash
# tls_cost.sh - what TLS and bearer-token authentication cost the server:
# the same h2load load against three ctxd processes of one build, side by
# side in one run: cleartext h2c, TLS (P-256 certificate made with the
# openssl CLI), and TLS with auth.tokens_file (every call carries
# `authorization: Bearer ...` and is checked before dispatch).
#
# usage: tests/bench/tls_cost.sh [BUILD_DIR]        (default: ./build)
# env:   N (calls per run, 100000), C (connections, 4), M (streams per
#        connection, 16), CONNS (connections of the handshake row, 1000),
#        RUNS (measured runs per server, 5), SERVER_CPU (0), LOAD_CPU (1)
#
# Rows (median, min and max req/s of RUNS runs, servers alternating):
#   list      unary Documents.List on an empty store, N calls over C
#             connections x M streams: per-call cost of TLS records and of
#             the token check;
#   connect   CONNS connections with one Documents.List each (h2load -n
#             CONNS -c CONNS -m 1): TCP + TLS handshake + HTTP/2 set-up.
# After the load, a grpcio call to each daemon must succeed (h2load sees only
# the HTTP status, and gRPC errors are HTTP 200), and on the token daemon a
# call without the token must be UNAUTHENTICATED.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_NAME=tls_cost
# shellcheck source=benchlib.sh
. "$HERE/benchlib.sh"
REPO=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-${CTXD_BUILD:-$REPO/build}}" && pwd)
N=${N:-100000}
C=${C:-4}
M=${M:-16}
CONNS=${CONNS:-1000}
RUNS=${RUNS:-5}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PY=${CTXD_PYTHON:-/usr/bin/python3}
CTXD=${CTXD_BIN:-$BUILD/ctxd}
TOKEN=bench-token-0123456789abcdef

for tool in h2load openssl taskset; do
  command -v "$tool" >/dev/null || { echo "tls_cost: $tool not found" >&2; exit 2; }
done
[ -x "$CTXD" ] || { echo "tls_cost: no ctxd at $CTXD (build first)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/ctxd-bench-tls.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

PYTHONPATH="$REPO/tests/integration" "$PY" -c "
from tls_certs import make_ca, make_cert
make_ca('.', 'ca')
make_cert('.', 'srv', 'ca', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1')"
echo "$TOKEN read bench" > tokens
chmod 600 tokens
printf '\0\0\0\0\0' > req.bin

start_info() {
  local name=$1
  shift
  taskset -c "$SERVER_CPU" "$CTXD" --listen 127.0.0.1:0 --data "$WORK/$name" \
    --model.builtin=none "$@" 2> "$WORK/$name.log" &
  PIDS+=($!)
  ADDR=$(wait_addr "$WORK/$name.log" "$!")
}
start_info h2c
A_H2C=$ADDR
start_info tls --server.tls_cert srv.pem --server.tls_key srv.key
A_TLS=$ADDR
start_info tok --server.tls_cert srv.pem --server.tls_key srv.key --auth.tokens_file tokens
A_TOK=$ADDR

load() { # URL N C M [header]: prints req/s
  local url=$1 n=$2 c=$3 m=$4
  shift 4
  taskset -c "$LOAD_CPU" h2load -n "$n" -c "$c" -m "$m" -t 1 -d req.bin \
    -H 'content-type: application/grpc' -H 'te: trailers' "$@" "$url" 2>&1 |
    awk '/^finished in/ {gsub(",", "", $4); print $4} /^requests:/ {if ($8 != '"$n"') bad=1}
         END {if (bad) print "FAILED"}' | head -1
}

median() { sort -g | awk '{a[NR]=$1} END {printf "%.0f %.0f %.0f\n", a[int((NR+1)/2)], a[1], a[NR]}'; }

declare -A R
PATHS=/ctxd.v1.Documents/List
for row in list connect; do
  for srv in h2c tls tok; do R[$row.$srv]=""; done
  for run in $(seq 0 "$RUNS"); do   # run 0 warms up
    for srv in h2c tls tok; do
      case $srv in
        h2c) url="http://$A_H2C$PATHS"; hdr=() ;;
        tls) url="https://$A_TLS$PATHS"; hdr=() ;;
        tok) url="https://$A_TOK$PATHS"; hdr=(-H "authorization: Bearer $TOKEN") ;;
      esac
      if [ "$row" = list ]; then
        v=$(load "$url" "$N" "$C" "$M" "${hdr[@]}")
      else
        v=$(load "$url" "$CONNS" "$CONNS" 1 "${hdr[@]}")
      fi
      [ "$v" = FAILED ] || [ -z "$v" ] && { note_fail "$row $srv: h2load run failed"; v=0; }
      [ "$run" = 0 ] || R[$row.$srv]+="$v"$'\n'
    done
  done
done

# Real gRPC after the load: each daemon answers, the token is needed.
PYTHONPATH="$BUILD/python:$REPO/clients/python" "$PY" - "$A_H2C" "$A_TLS" "$A_TOK" "$TOKEN" <<'EOF' || note_fail "grpcio checks"
import sys
import grpc
import ctxd_client
D = ctxd_client.documents_pb2
Stub = ctxd_client.documents_pb2_grpc.DocumentsStub
h2c, tls, tok, token = sys.argv[1:]
ca = open("ca.pem", "rb").read()
opts = [("grpc.ssl_target_name_override", "localhost")]
Stub(grpc.insecure_channel(h2c)).List(D.ListRequest(), timeout=10)
Stub(grpc.secure_channel(tls, grpc.ssl_channel_credentials(ca), opts)).List(D.ListRequest(), timeout=10)
s = Stub(grpc.secure_channel(tok, grpc.ssl_channel_credentials(ca), opts))
s.List(D.ListRequest(), timeout=10, metadata=[("authorization", "Bearer " + token)])
try:
    s.List(D.ListRequest(), timeout=10)
    sys.exit("no token was accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
print("  grpcio checks: ok")
EOF

echo
echo "tls_cost: N=$N C=$C M=$M CONNS=$CONNS RUNS=$RUNS, server on CPU $SERVER_CPU, h2load on CPU $LOAD_CPU"
printf '%-8s %-12s %10s %10s %10s %8s\n' row server median min max "vs h2c"
for row in list connect; do
  base=$(printf '%s' "${R[$row.h2c]}" | median | cut -d' ' -f1)
  for srv in h2c tls tok; do
    read -r med lo hi < <(printf '%s' "${R[$row.$srv]}" | median)
    name=$srv
    [ "$srv" = tok ] && name="tls+token"
    printf '%-8s %-12s %10s %10s %10s %8s\n' "$row" "$name" "$med" "$lo" "$hi" \
      "$(awk -v a="$med" -v b="$base" 'BEGIN {printf "%.2f", b ? a / b : 0}')"
  done
done
[ "$FAILS" = 0 ] || { echo "tls_cost: $FAILS failure(s)"; exit 1; }
