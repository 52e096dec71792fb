#!/usr/bin/env bash
# benches/h1_cpu_split.sh - where an HTTP/1.1 request's CPU goes: user and system time per
# request of Fulcrum (one worker, each io driver) and of the L4 relay (HAProxy `mode tcp`, the
# floor of issue 18), each in front of one nginx backend and driven by h2load over HTTP/1.1 with
# 8 keep-alive connections, for a 3-byte GET and a 1 KiB POST.
#
# Both times come from the process's /proc/PID/stat (utime, stime: clock ticks of 10 ms), read
# before and after N requests; keep N large enough (the default, 150 000, takes about 3 s per
# measurement) that a tick is a small part of the total. Pinning as in bench.sh: the balancer
# on CPU 0, backend and load generator on CPU 1.
#
# Usage: benches/h1_cpu_split.sh [N]
# FULCRUM_BIN names another build (default target/release/fulcrum); BENCH_PORT_BASE moves the
# ports (default 39500).
# Needs: h2load (nghttp2-client), nginx, haproxy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-150000}
PORT_BASE=${BENCH_PORT_BASE:-39500}
BE=$((PORT_BASE + 1))
FULCRUM=${FULCRUM_BIN:-target/release/fulcrum}
# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
source benches/callgrind_lib.sh
# shellcheck source-path=SCRIPTDIR source=peer_conf.sh
source benches/peer_conf.sh

need_tools h2load nginx haproxy
need_built "$FULCRUM" "--bin fulcrum"

start_h1_backend "$BE" 1
printf '[limits]\nmax_requests_per_connection = 0\n' >"$TMP/fulcrum.toml"

# ticks PID: utime and stime of PID, in clock ticks.
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# measure NAME PID PORT: one line per workload, user and system µs per request.
measure() {
    local name=$1 pid=$2 port=$3 path u0 s0 u1 s1 hz
    hz=$(getconf CLK_TCK)
    for path in /small /post; do
        local body=()
        [[ $path == /post ]] && body=(-d "$TMP/1k")
        # Warm-up: connections made, pools filled.
        taskset -c 1 h2load --h1 -n 2000 -c 8 -m 1 "${body[@]}" "http://127.0.0.1:$port$path" \
            >/dev/null 2>&1
        read -r u0 s0 < <(ticks "$pid")
        taskset -c 1 h2load --h1 -n "$N" -c 8 -m 1 "${body[@]}" "http://127.0.0.1:$port$path" \
            >"$TMP/h2load.out" 2>&1
        read -r u1 s1 < <(ticks "$pid")
        grep -q "$N succeeded" "$TMP/h2load.out" || { log "$name $path: h2load failed"; exit 1; }
        awk -v name="$name" -v path="$path" -v n="$N" -v hz="$hz" \
            -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN {
                f = 1e6 / hz / n
                printf "| %s | %s | %.2f | %.2f | %.2f |\n", name, path, u * f, s * f, (u + s) * f
            }'
    done
}

echo "| target | path | user µs/req | system µs/req | total µs/req |"
echo "|---|---|---|---|---|"
port=$((PORT_BASE + 10))
for driver in io_uring epoll; do
    port=$((port + 1))
    taskset -c 0 "$FULCRUM" --config "$TMP/fulcrum.toml" --listen "127.0.0.1:$port" \
        --backend "http://127.0.0.1:$BE" --workers 1 --io-driver "$driver" --access-log off \
        >"$TMP/fulcrum-$driver.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" || { log "fulcrum ($driver) did not start"; exit 1; }
    measure "fulcrum-$driver" "$pid" "$port"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
port=$((port + 1))
write_haproxy_conf "$TMP/relay.cfg" tcp "" "" "$port" "" "$BE" "$BE" ""
taskset -c 0 haproxy -db -f "$TMP/relay.cfg" >"$TMP/relay.log" 2>&1 &
pid=$!
PIDS+=("$pid")
wait_port "$port" || { log "the relay did not start"; exit 1; }
measure relay "$pid" "$port"
