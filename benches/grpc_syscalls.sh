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
# shellcheck source-path=SCRIPTDIR source=callgrind_lib.sh
source benches/callgrind_lib.sh

command -v perf >/dev/null || { log "perf not found (apt-get install -y linux-perf)"; exit 2; }

EVENTS=(
    syscalls:sys_enter_recvfrom syscalls:sys_enter_sendto syscalls:sys_enter_epoll_wait
    syscalls:sys_enter_io_uring_enter io_uring:io_uring_submit_req io_uring:io_uring_poll_arm
    sched:sched_switch
)
perf stat -e "${EVENTS[0]}" -- true >/dev/null 2>&1 ||
    { log "perf cannot read tracepoints here (run as root, or lower kernel.perf_event_paranoid)"; exit 2; }

# The backends and h2load on CPU 1; the balancer goes on CPU 0.
start_grpc_harness "${BENCH_PORT_BASE:-39400}" 1

# count NAME COMMAND...: one table row, the events per call of COMMAND's process.
count() {
    local name=$1 perf_pid stat=$TMP/perf.txt
    shift
    start_balancer "$name" taskset -c 0 "$@"
    grpc_load 20000 >/dev/null
    # perf attaches with its events off and turns them on when told: the answer on the ack
    # fifo says it counts, so no call of the run goes uncounted.
    rm -f "$TMP/ctl" "$TMP/ack"
    mkfifo "$TMP/ctl" "$TMP/ack"
    perf stat -x, -o "$stat" -p "$BALANCER" -D -1 --control "fifo:$TMP/ctl,$TMP/ack" \
        -e "$(IFS=,; echo "${EVENTS[*]}")" -e syscalls:sys_exit_recvfrom --filter 'ret == -11' \
        2>"$TMP/perf.log" &
    perf_pid=$!
    # shellcheck disable=SC2016 # the inner sh expands $1 and $2
    timeout 30 sh -c 'echo enable >"$1" && read -r _ <"$2"' _ "$TMP/ctl" "$TMP/ack" ||
        { log "perf did not start counting: $(tail -n 3 "$TMP/perf.log")"; exit 1; }
    grpc_calls "$name" "$CALLS"
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    stop_balancer
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
    count "fulcrum-$driver" "${FULCRUM_GRPC[@]}" --io-driver "$driver"
done
if command -v haproxy >/dev/null; then
    count haproxy haproxy -db -f "$TMP/haproxy/haproxy.cfg"
fi
