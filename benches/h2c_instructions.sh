#!/usr/bin/env bash
# benches/h2c_instructions.sh - instructions per proxied h2c request, counted by callgrind
# (deterministic to a few hundred, unlike CPU time on a shared machine): Fulcrum's native HTTP/2
# engine with one worker on the epoll driver (valgrind does not run io_uring) in front of two
# nginx h2c servers, driven by h2load over h2c with 4 connections of 8 streams, the shape of
# bench.sh's h2c workload.
#
# Fulcrum runs under `valgrind --tool=callgrind` twice, for N1 and N2 requests; the difference
# of the two instruction totals divided by N2 - N1 is the cost of one request, without start-up
# and shut-down. How many requests one wake-up handles varies from run to run, and the count
# with it, by a few hundred.
#
# Usage: benches/h2c_instructions.sh [N1] [N2]   (defaults 2000 and 12000)
# FULCRUM_BIN names another build (default target/release/fulcrum).
# Needs: valgrind, h2load (nghttp2-client), nginx.
# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N1=${1:-2000}
N2=${2:-12000}
PORT_BASE=${BENCH_PORT_BASE:-39500}
BE1=$((PORT_BASE + 1))
BE2=$((PORT_BASE + 2))
LB=$((PORT_BASE + 10))
FULCRUM=${FULCRUM_BIN:-target/release/fulcrum}
source benches/callgrind_lib.sh

need_tools valgrind h2load nginx
need_built "$FULCRUM" "--bin fulcrum"

start_h2c_backends "$BE1" "$BE2"
printf '[limits]\nmax_requests_per_connection = 0\n' >"$TMP/fulcrum.toml"

# instructions N: total Ir of Fulcrum under callgrind after N requests.
instructions() {
    local n=$1 out=$TMP/cg.$1
    start_balancer "fulcrum.$n" valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$FULCRUM" --config "$TMP/fulcrum.toml" --listen "127.0.0.1:$LB" \
        --admin-listen "127.0.0.1:$((LB + 1))" --backend "h2c://127.0.0.1:$BE1" \
        --backend "h2c://127.0.0.1:$BE2" --workers 1 --io-driver epoll --http2-engine native \
        --access-log off
    h2load -n "$n" -c 4 -m 8 "http://127.0.0.1:$LB/small" >"$TMP/h2load.$n" 2>&1
    need_succeeded "$TMP/h2load.$n" "$n" "not every request"
    stop_balancer
    counted "$out"
}

a=$(instructions "$N1")
b=$(instructions "$N2")
echo "| balancer | instructions per h2c request |"
echo "|---|---|"
printf '| fulcrum (%s) | %d |\n' "$FULCRUM" $(((b - a) / (N2 - N1)))
