#!/usr/bin/env bash
# benches/grpc_syscalls.sh - what the kernel is asked to do per proxied gRPC unary call: system
# calls by kind, receives that found nothing (EAGAIN), io_uring operations and the poll arms of
# those that found nothing at submission, and the times the balancer was switched out (it went
# to sleep). Fulcrum's native engine on each io driver and, when installed, HAProxy (proto h2),
# each in front of the tonic echo backend (examples/grpc_echo.rs), driven by h2load over h2c,
# pinned as bench.sh pins them (the balancer on CPU 0, h2load and the backends on CPU 1).
#
# Counts come from perf's tracepoints on the balancer's process over CALLS calls, after a
# warm-up. They depend on timing (how many calls one wake-up finds waiting), not on the
# instructions of the code, so they move a little between runs; compare them within one run.
#
# Usage: benches/grpc_syscalls.sh [CALLS]   (default 100000)
# FULCRUM_BIN and ECHO_BIN name other builds of the balancer and of the echo backend.
# Needs: perf (linux-perf) with tracepoints, h2load (nghttp2-client), target/release/fulcrum and
# target/release/examples/grpc_echo (cargo build --release --bin fulcrum --example grpc_echo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CALLS=${1:-100000}
PORT_BASE=${BENCH_PORT_BASE:-39400}
BE1=$((PORT_BASE + 1))
BE2=$((PORT_BASE + 2))
LB=$((PORT_BASE + 10))
# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
source benches/callgrind_lib.sh

command -v perf >/dev/null || { log "perf not found (apt-get install -y linux-perf)"; exit 2; }
command -v h2load >/dev/null || { log "h2load not found"; exit 2; }
FULCRUM=${FULCRUM_BIN:-target/release/fulcrum}
ECHO=${ECHO_BIN:-target/release/examples/grpc_echo}
[[ -x $FULCRUM && -x $ECHO ]] || { log "build first: cargo build --release --bin fulcrum --example grpc_echo"; exit 2; }

EVENTS=(
    syscalls:sys_enter_recvfrom syscalls:sys_enter_sendto syscalls:sys_enter_epoll_wait
    syscalls:sys_enter_io_uring_enter io_uring:io_uring_submit_req io_uring:io_uring_poll_arm
    sched:sched_switch
)
perf stat -e "${EVENTS[0]}" -- true >/dev/null 2>&1 ||
    { log "perf cannot read tracepoints here (run as root, or lower kernel.perf_event_paranoid)"; exit 2; }

# EchoRequest { message: "hello" } in one gRPC frame.
printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$TMP/body"
taskset -c 1 "$ECHO" "127.0.0.1:$BE1" "127.0.0.1:$BE2" >"$TMP/echo.log" 2>&1 &
PIDS+=($!)
wait_port "$BE1" || { log "echo backend did not start"; exit 1; }

cat >"$TMP/fulcrum.toml" <<EOF
[limits]
max_requests_per_connection = 0
EOF
# shellcheck source-path=SCRIPTDIR source=peer_conf.sh
source benches/peer_conf.sh
write_haproxy_h2_conf "$TMP/haproxy" "$LB" "$BE1" "$BE2"

load() {
    taskset -c 1 h2load -t1 -c4 -m8 -n "$1" -d "$TMP/body" -H 'content-type: application/grpc' \
        -H 'te: trailers' "http://127.0.0.1:$LB/echo.Echo/Unary"
}

# count NAME COMMAND...: one table row, the events per call of COMMAND's process.
count() {
    local name=$1 pid perf_pid stat=$TMP/perf.txt
    shift
    taskset -c 0 "$@" >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$LB" || { log "$name did not start: $(tail -n 3 "$TMP/$name.log")"; exit 1; }
    load 20000 >/dev/null
    perf stat -x, -o "$stat" -p "$pid" -e "$(IFS=,; echo "${EVENTS[*]}")" \
        -e syscalls:sys_exit_recvfrom --filter 'ret == -11' &
    perf_pid=$!
    sleep 0.2 # perf attaches
    load "$CALLS" >"$TMP/$name.h2load"
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    grep -q "$CALLS succeeded" "$TMP/$name.h2load" ||
        { log "$name: not every call succeeded: $(grep requests: "$TMP/$name.h2load")"; exit 1; }
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    awk -F, -v name="$name" -v calls="$CALLS" '
        { n[$3] = $1 }
        END {
            printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.3f |\n", name,
                n["syscalls:sys_enter_recvfrom"] / calls, n["syscalls:sys_exit_recvfrom"] / calls,
                n["syscalls:sys_enter_sendto"] / calls, n["syscalls:sys_enter_epoll_wait"] / calls,
                n["syscalls:sys_enter_io_uring_enter"] / calls,
                n["io_uring:io_uring_submit_req"] / calls, n["io_uring:io_uring_poll_arm"] / calls,
                n["sched:sched_switch"] / calls
        }' "$stat"
}

echo "| balancer | recvfrom | of which EAGAIN | sendto | epoll_wait | io_uring_enter | io_uring ops | poll arms | switched out |"
echo "|---|---|---|---|---|---|---|---|---|"
for driver in io_uring epoll; do
    count "fulcrum-$driver" "$FULCRUM" --config "$TMP/fulcrum.toml" --listen "127.0.0.1:$LB" \
        --admin-listen "127.0.0.1:$((LB + 1))" --backend "h2c://127.0.0.1:$BE1" \
        --backend "h2c://127.0.0.1:$BE2" --workers 1 --io-driver "$driver" --access-log off
done
if command -v haproxy >/dev/null; then
    count haproxy haproxy -db -f "$TMP/haproxy/haproxy.cfg"
fi
