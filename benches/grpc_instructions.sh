#!/usr/bin/env bash
# benches/grpc_instructions.sh - instructions per proxied gRPC unary call, counted by callgrind
# (deterministic, unlike CPU time on a shared machine): Fulcrum on each HTTP/2 engine (h2 and
# native) and, when installed, HAProxy (proto h2), each in front of the tonic echo backend
# (examples/grpc_echo.rs), driven by h2load over h2c.
#
# Each balancer runs under `valgrind --tool=callgrind` twice, for N1 and N2 calls; the
# difference of the two instruction totals divided by N2 - N1 is the cost of one call, without
# start-up and shut-down. Every thread of the process counts (Fulcrum's other threads are idle).
#
# Usage: benches/grpc_instructions.sh [N1] [N2]   (defaults 2000 and 12000)
# FULCRUM_BIN and ECHO_BIN name other builds of the balancer and of the echo backend.
# Needs: valgrind, h2load (nghttp2-client), target/release/fulcrum and
# target/release/examples/grpc_echo (cargo build --release --bin fulcrum --example grpc_echo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N1=${1:-2000}
N2=${2:-12000}
PORT_BASE=${BENCH_PORT_BASE:-39300}
BE1=$((PORT_BASE + 1))
BE2=$((PORT_BASE + 2))
LB=$((PORT_BASE + 10))
# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
source benches/callgrind_lib.sh

command -v valgrind >/dev/null || { log "valgrind not found"; exit 2; }
command -v h2load >/dev/null || { log "h2load not found"; exit 2; }
FULCRUM=${FULCRUM_BIN:-target/release/fulcrum}
ECHO=${ECHO_BIN:-target/release/examples/grpc_echo}
[[ -x $FULCRUM && -x $ECHO ]] || { log "build first: cargo build --release --bin fulcrum --example grpc_echo"; exit 2; }

# EchoRequest { message: "hello" } in one gRPC frame.
printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$TMP/body"
"$ECHO" "127.0.0.1:$BE1" "127.0.0.1:$BE2" >"$TMP/echo.log" 2>&1 &
PIDS+=($!)

wait_port "$BE1" || { log "echo backend did not start"; exit 1; }

cat >"$TMP/fulcrum.toml" <<EOF
[limits]
max_requests_per_connection = 0
EOF
# HAProxy as bench.sh's grpc suite runs it.
# shellcheck source-path=SCRIPTDIR source=peer_conf.sh
source benches/peer_conf.sh
write_haproxy_h2_conf "$TMP/haproxy" "$LB" "$BE1" "$BE2"

# instructions NAME CALLS COMMAND...: total Ir of COMMAND under callgrind after CALLS calls.
instructions() {
    local name=$1 calls=$2 out=$TMP/$1.$2.out pid
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$LB" || { log "$name did not start: $(tail -n 3 "$TMP/$name.log")"; exit 1; }
    h2load -n "$calls" -c 4 -m 8 -d "$TMP/body" -H 'content-type: application/grpc' \
        -H 'te: trailers' "http://127.0.0.1:$LB/echo.Echo/Unary" >"$TMP/$name.h2load" 2>&1
    grep -q "$calls succeeded" "$TMP/$name.h2load" ||
        { log "$name: not every call succeeded: $(grep requests: "$TMP/$name.h2load")"; exit 1; }
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    awk '/^summary:|^totals:/ { print $2; exit }' "$out"
}

measure() {
    local name=$1 a b
    shift
    a=$(instructions "$name" "$N1" "$@")
    b=$(instructions "$name" "$N2" "$@")
    printf '| %s | %d |\n' "$name" $(((b - a) / (N2 - N1)))
}

echo "| balancer | instructions per gRPC unary call |"
echo "|---|---|"
for engine in h2 native; do
    measure "fulcrum-$engine" "$FULCRUM" --config "$TMP/fulcrum.toml" --listen "127.0.0.1:$LB" \
        --admin-listen "127.0.0.1:$((LB + 1))" --backend "h2c://127.0.0.1:$BE1" \
        --backend "h2c://127.0.0.1:$BE2" --workers 1 --io-driver epoll --access-log off \
        --http2-engine "$engine"
done
if command -v haproxy >/dev/null; then
    measure haproxy haproxy -db -f "$TMP/haproxy/haproxy.cfg"
fi
