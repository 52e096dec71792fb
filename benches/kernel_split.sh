#!/usr/bin/env bash
# benches/kernel_split.sh - where a proxied request's CPU goes between user space and the
# kernel, and what the balancer asks of TCP for it: user and system CPU per request, the times
# it went to sleep, its system calls, and the TCP segments it sent per request on each side,
# split into segments carrying data and pure ACKs (from `ss -ti`: segs_out - data_segs_out),
# beside the data segments the backends sent it. Fulcrum on each io driver beside a peer when
# installed, pinned as bench.sh pins them: the balancer alone on CPU 0; h2load and the backends
# on CPU 1.
#
# Workloads (bench.sh's shapes):
#   h1    GET /small (3 bytes) over HTTP/1.1 keep-alive (h2load --h1, 32 connections) to two
#         nginx servers; the peer is the L4 relay, HAProxy `mode tcp` (the http suite's floor)
#   h2c   GET /small over h2c (h2load, 4 connections x 8 streams) to two nginx servers
#         (`listen ... http2`); the peer is HAProxy `proto h2` (the http suite's h2c workload)
#   grpc  gRPC unary calls (4 x 8) to the tonic echo backend (examples/grpc_echo.rs); the peer
#         is HAProxy `proto h2` (the grpc suite)
#
# Each target serves one h2load run of SECONDS after a 2 s warm-up: CPU and sleeps are taken
# over the whole run; system calls (perf) and segments (two `ss` snapshots) over its middle
# (SECONDS - 2 s), scaled to the run's requests. Timing decides how much one wake-up finds, so
# compare rows within one run; ROUNDS repeats the targets in turn.
#
# Usage: benches/kernel_split.sh [h1|h2c|grpc] [SECONDS] [ROUNDS]   (default h2c 8 3)
# FULCRUM_BIN and ECHO_BIN name other builds of the balancer and of the echo backend.
# Needs: h2load (nghttp2-client), ss (iproute2), nginx for h1 and h2c, haproxy for the peer;
# perf (linux-perf) for the system calls (left out without it); target/release/fulcrum (and
# target/release/examples/grpc_echo for grpc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORKLOAD=${1:-h2c}
SECS=${2:-8}
ROUNDS=${3:-3}
[[ $WORKLOAD == h1 || $WORKLOAD == h2c || $WORKLOAD == grpc ]] ||
    { echo "usage: $0 [h1|h2c|grpc] [SECONDS] [ROUNDS]" >&2; exit 2; }
((SECS >= 4)) || { echo "SECONDS must be at least 4" >&2; exit 2; }
WINDOW=$((SECS - 2))

# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
source benches/callgrind_lib.sh
command -v ss >/dev/null || { log "ss not found (apt-get install -y iproute2)"; exit 2; }
PERF=0
perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 && PERF=1

# The backends and h2load on CPU 1; the balancer goes on CPU 0. The gRPC harness sets the
# ports, HAProxy's `proto h2` configuration and Fulcrum's command (FULCRUM_GRPC) and starts the
# echo backends; for h1 and h2c, nginx takes the backends' ports instead.
if [[ $WORKLOAD == grpc ]]; then
    start_grpc_harness "${BENCH_PORT_BASE:-39500}" 1
    LOAD=(-c 4 -m 8 -d "$TMP/body" -H 'content-type: application/grpc' -H 'te: trailers'
        "http://127.0.0.1:$LB/echo.Echo/Unary")
else
    command -v nginx >/dev/null || { log "nginx not found (apt-get install -y nginx)"; exit 2; }
    start_grpc_harness "${BENCH_PORT_BASE:-39500}" 1 own
    listen=" http2"
    LOAD=(-c 4 -m 8 "http://127.0.0.1:$LB/small")
    if [[ $WORKLOAD == h1 ]]; then
        # Fulcrum to HTTP/1.1 backends; the peer is the L4 relay (bench.sh's start_relay).
        listen=""
        FULCRUM_GRPC=("${FULCRUM_GRPC[@]/#h2c:/http:}")
        write_haproxy_conf "$TMP/haproxy/haproxy.cfg" tcp "" "" "$LB" "" "$BE1" "$BE2" ""
        LOAD=(--h1 -c 32 "http://127.0.0.1:$LB/small")
    fi
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/nginx/pid; error_log $TMP/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off; server_tokens off; client_body_temp_path $TMP/nginx;
    keepalive_requests 100000000;
    server { listen 127.0.0.1:$BE1$listen; add_header X-Backend b1; location = /small { return 200 "ok\n"; } }
    server { listen 127.0.0.1:$BE2$listen; add_header X-Backend b2; location = /small { return 200 "ok\n"; } }
}
EOF
    "${GRPC_PIN[@]}" nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" &
    PIDS+=($!)
    wait_port "$BE1" || { log "nginx did not start"; exit 1; }
fi

# load SECONDS: h2load for SECONDS through the balancer, the bench suites' shape.
load() { "${GRPC_PIN[@]}" h2load -t 1 -D "$1" "${LOAD[@]}"; }

# cpu PID: user and system clock ticks of PID's threads.
cpu() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# sleeps PID: the times PID's threads went to sleep (voluntary context switches).
sleeps() { cat "/proc/$1"/task/*/status | awk '/^voluntary_ctxt_switches/ { n += $2 } END { print n }'; }

# segments BEFORE AFTER: segments sent between two `ss -tin` snapshots, as "side data acks"
# lines: by the balancer to its clients (its sockets on the listener's port) and to the
# backends (its sockets to the backends' ports), and by the backends to the balancer.
segments() {
    awk -v lb="$LB" -v be1="$BE1" -v be2="$BE2" '
        FNR == 1 { snap++ }
        /^[^ \t]/ { n = split($(NF - 1), l, ":"); m = split($NF, p, ":"); key = $(NF - 1) " " $NF
            side = l[n] == lb ? "client" : (p[m] == be1 || p[m] == be2) ? "backend" : ""
            if (l[n] == be1 || l[n] == be2) side = "from_backend"
            next }
        side != "" && /segs_out/ {
            out = 0; data = 0
            for (i = 1; i <= NF; i++) {
                split($i, kv, ":")
                if (kv[1] == "segs_out") out = kv[2]
                if (kv[1] == "data_segs_out") data = kv[2]
            }
            if (snap == 1) { o[key] = out; d[key] = data }
            else if (key in o) { dd[side] += data - d[key]; aa[side] += (out - o[key]) - (data - d[key]) }
        }
        END { for (k in dd) print k, dd[k], aa[k] }' "$1" "$2"
}

# measure NAME COMMAND...: one table row for the balancer COMMAND starts.
measure() {
    local name=$1 pid u0 s0 u1 s1 z0 z1 watch requests calls=- rows
    shift
    start_balancer "$name" taskset -c 0 "$@"
    pid=$BALANCER
    load 2 >/dev/null
    read -r u0 s0 < <(cpu "$pid")
    z0=$(sleeps "$pid")
    # The middle of the run: snapshots and system calls 1 s after it starts, for WINDOW.
    {
        sleep 1
        ss -tinH state established >"$TMP/ss1"
        if ((PERF)); then
            perf stat -x, -o "$TMP/perf" -e raw_syscalls:sys_enter -p "$pid" -- sleep "$WINDOW"
        else
            sleep "$WINDOW"
        fi
        ss -tinH state established >"$TMP/ss2"
    } &
    watch=$!
    load "$SECS" >"$TMP/$name.h2load"
    read -r u1 s1 < <(cpu "$pid")
    z1=$(sleeps "$pid")
    wait "$watch"
    stop_balancer
    requests=$(awk '/^requests:/ { print $8 }' "$TMP/$name.h2load")
    ((requests > 0)) || { log "$name: no request succeeded: $(grep requests: "$TMP/$name.h2load")"; exit 1; }
    ((PERF)) && calls=$(awk -F, '/raw_syscalls/ { print $1 }' "$TMP/perf")
    rows=$(segments "$TMP/ss1" "$TMP/ss2" | tr '\n' ' ')
    awk -v name="$name" -v n="$requests" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v z=$((z1 - z0)) \
        -v tick="$(getconf CLK_TCK)" -v scale="$SECS/$WINDOW" -v calls="$calls" -v rows="$rows" '
        BEGIN {
            split(scale, f, "/"); k = f[1] / f[2] / n
            m = split(rows, r, " ")
            for (i = 1; i <= m; i += 3) { data[r[i]] = r[i + 1] * k; acks[r[i]] = r[i + 2] * k }
            us = 1e6 / tick / n
            printf "| %s | %d | %.2f | %.2f | %.2f | %.3f | %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
                name, n, u * us, s * us, (u + s) * us, z / n,
                calls == "-" ? "-" : sprintf("%.2f", calls * k), data["client"], acks["client"],
                data["backend"], acks["backend"], data["from_backend"]
        }'
}

peer=haproxy
[[ $WORKLOAD == h1 ]] && peer=relay
echo "Workload: $WORKLOAD, $SECS s per target; per request:"
echo
echo "| balancer | requests | user µs | system µs | CPU µs | sleeps | system calls | to clients: data | pure ACKs | to backends: data | pure ACKs | from backends: data |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for ((round = 0; round < ROUNDS; round++)); do
    for driver in io_uring epoll; do
        measure "fulcrum-$driver" "${FULCRUM_GRPC[@]}" --io-driver "$driver"
    done
    if command -v haproxy >/dev/null; then
        measure "$peer" haproxy -db -f "$TMP/haproxy/haproxy.cfg"
    fi
done
