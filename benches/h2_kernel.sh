#!/usr/bin/env bash
# benches/h2_kernel.sh - where a proxied HTTP/2 request's CPU goes between user space and the
# kernel, and what the balancer asks of TCP for it: user and system CPU per request, the times
# it went to sleep, its system calls, and the TCP segments it sent per request on each side,
# split into segments carrying data and pure ACKs (from `ss -ti`: segs_out - data_segs_out),
# beside the data segments the backends sent it.
# Fulcrum's native engine on each io driver and, when installed, HAProxy (proto h2), pinned as
# bench.sh pins them: the balancer alone on CPU 0; h2load and the backends on CPU 1.
#
# Workloads (bench.sh's shapes, h2load 4 connections x 8 streams, over h2c both sides):
#   h2c   GET /small (3 bytes) to two nginx servers (`listen ... http2`), the http suite's h2c
#   grpc  gRPC unary calls to the tonic echo backend (examples/grpc_echo.rs), the grpc suite's
#
# Each target serves one h2load run of SECONDS after a 2 s warm-up: CPU and sleeps are taken
# over the whole run; system calls (perf) and segments (two `ss` snapshots) over its middle
# (SECONDS - 2 s), scaled to the run's requests. Timing decides how much one wake-up finds, so
# compare rows within one run; ROUNDS repeats the three targets in turn.
#
# Usage: benches/h2_kernel.sh [h2c|grpc] [SECONDS] [ROUNDS]   (default h2c 8 3)
# FULCRUM_BIN and ECHO_BIN name other builds of the balancer and of the echo backend.
# Needs: h2load (nghttp2-client), ss (iproute2), nginx for h2c; perf (linux-perf) for the
# system calls (left out without it); target/release/fulcrum (and
# target/release/examples/grpc_echo for grpc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORKLOAD=${1:-h2c}
SECS=${2:-8}
ROUNDS=${3:-3}
[[ $WORKLOAD == h2c || $WORKLOAD == grpc ]] || { echo "usage: $0 [h2c|grpc] [SECONDS] [ROUNDS]" >&2; exit 2; }
((SECS >= 4)) || { echo "SECONDS must be at least 4" >&2; exit 2; }
WINDOW=$((SECS - 2))

# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
source benches/callgrind_lib.sh
command -v ss >/dev/null || { log "ss not found (apt-get install -y iproute2)"; exit 2; }
PERF=0
perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 && PERF=1

# The backends and h2load on CPU 1; the balancer goes on CPU 0. The gRPC harness starts the
# echo backends; for h2c, nginx takes their ports instead.
if [[ $WORKLOAD == grpc ]]; then
    start_grpc_harness "${BENCH_PORT_BASE:-39500}" 1
    LOAD=(-d "$TMP/body" -H 'content-type: application/grpc' -H 'te: trailers'
        "http://127.0.0.1:$LB/echo.Echo/Unary")
else
    command -v nginx >/dev/null || { log "nginx not found (apt-get install -y nginx)"; exit 2; }
    start_grpc_harness "${BENCH_PORT_BASE:-39500}" 1 own
    mkdir -p "$TMP/h2c"
    cat >"$TMP/h2c/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/h2c/pid; error_log $TMP/h2c/error.log;
events { worker_connections 1024; }
http {
    access_log off; server_tokens off; client_body_temp_path $TMP/h2c;
    keepalive_requests 100000000;
    server { listen 127.0.0.1:$BE1 http2; add_header X-Backend b1; location = /small { return 200 "ok\n"; } }
    server { listen 127.0.0.1:$BE2 http2; add_header X-Backend b2; location = /small { return 200 "ok\n"; } }
}
EOF
    "${GRPC_PIN[@]}" nginx -c "$TMP/h2c/nginx.conf" -p "$TMP/h2c" &
    PIDS+=($!)
    wait_port "$BE1" || { log "nginx did not start"; exit 1; }
    LOAD=("http://127.0.0.1:$LB/small")
fi

# load SECONDS: h2load for SECONDS through the balancer, the bench suites' shape.
load() { "${GRPC_PIN[@]}" h2load -t 1 -c 4 -m 8 -D "$1" "${LOAD[@]}"; }

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
    taskset -c 0 "$@" >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$LB" || { log "$name did not start: $(tail -n 3 "$TMP/$name.log")"; exit 1; }
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
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
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

echo "Workload: $WORKLOAD, h2load -c 4 -m 8 for $SECS s per target; per request:"
echo
echo "| balancer | requests | user µs | system µs | CPU µs | sleeps | system calls | to clients: data | pure ACKs | to backends: data | pure ACKs | from backends: data |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for ((round = 0; round < ROUNDS; round++)); do
    for driver in io_uring epoll; do
        measure "fulcrum-$driver" "${FULCRUM_GRPC[@]}" --io-driver "$driver"
    done
    if command -v haproxy >/dev/null; then
        measure haproxy haproxy -db -f "$TMP/haproxy/haproxy.cfg"
    fi
done
