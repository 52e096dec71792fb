#!/usr/bin/env bash
# benches/h1_instructions.sh - instructions per proxied HTTP/1.1 request, counted by callgrind
# (deterministic, unlike CPU time on a shared machine): Fulcrum with one worker on the epoll
# driver (valgrind does not run io_uring) in front of one nginx backend, driven by h2load over
# HTTP/1.1 with 8 keep-alive connections.
#
# Fulcrum runs under `valgrind --tool=callgrind` twice, for N1 and N2 requests after the same
# warm-up; the difference of the two instruction totals divided by N2 - N1 is the cost of one
# request, without start-up and shut-down. Every thread of the process counts.
#
# Usage: benches/h1_instructions.sh [N1] [N2] [PATH]   (defaults 5000, 25000 and /small:
# 3 bytes; /16k is 16 KiB, /post a POST of 1 KiB)
# FULCRUM_BIN names another build (default target/release/fulcrum).
# Needs: valgrind, h2load (nghttp2-client), nginx.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N1=${1:-5000}
N2=${2:-25000}
URL_PATH=${3:-/small}
PORT_BASE=${BENCH_PORT_BASE:-39400}
BE=$((PORT_BASE + 1))
LB=$((PORT_BASE + 10))
FULCRUM=${FULCRUM_BIN:-target/release/fulcrum}
# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
source benches/callgrind_lib.sh

need_tools valgrind h2load nginx
need_built "$FULCRUM" "--bin fulcrum"

start_h1_backend "$BE"
printf '[limits]\nmax_requests_per_connection = 0\n' >"$TMP/fulcrum.toml"
body=()
[[ $URL_PATH == /post ]] && body=(-d "$TMP/1k")

# instructions N: total Ir of Fulcrum under callgrind after a warm-up and N requests.
instructions() {
    local n=$1 out=$TMP/cg.$1 total=0 f
    start_balancer "fulcrum.$n" valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
        "$FULCRUM" --config "$TMP/fulcrum.toml" --listen "127.0.0.1:$LB" \
        --backend "http://127.0.0.1:$BE" --workers 1 --io-driver epoll --access-log off
    # Warm-up: the backend connections are pooled before counting matters.
    h2load --h1 -n 1000 -c 8 "${body[@]}" "http://127.0.0.1:$LB$URL_PATH" >/dev/null 2>&1
    h2load --h1 -n "$n" -c 8 "${body[@]}" "http://127.0.0.1:$LB$URL_PATH" >"$TMP/h2load.$n" 2>&1
    need_succeeded "$TMP/h2load.$n" "$n" "not every request"
    stop_balancer
    for f in "$out".*; do
        total=$((total + $(counted "$f")))
    done
    echo "$total"
}

a=$(instructions "$N1")
b=$(instructions "$N2")
echo "| balancer | path | instructions per HTTP/1.1 request |"
echo "|---|---|---|"
printf '| fulcrum (%s) | %s | %d |\n' "$FULCRUM" "$URL_PATH" $(((b - a) / (N2 - N1)))
