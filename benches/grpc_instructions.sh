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
# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
source benches/callgrind_lib.sh

need_tools valgrind
start_grpc_harness "${BENCH_PORT_BASE:-39300}"

# instructions NAME CALLS COMMAND...: total Ir of COMMAND under callgrind after CALLS calls.
instructions() {
    local name=$1 calls=$2 out=$TMP/$1.$2.out
    shift 2
    start_balancer "$name" valgrind --tool=callgrind --callgrind-out-file="$out" "$@"
    grpc_calls "$name" "$calls"
    stop_balancer
    counted "$out"
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
    measure "fulcrum-$engine" "${FULCRUM_GRPC[@]}" --io-driver epoll --http2-engine "$engine"
done
if command -v haproxy >/dev/null; then
    measure haproxy haproxy -db -f "$TMP/haproxy/haproxy.cfg"
fi
