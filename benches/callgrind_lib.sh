# shellcheck shell=bash
# benches/callgrind_lib.sh - what the measuring scripts under benches/ share (sourced): a
# scratch directory and the processes to stop on exit, logging, checks for tools and builds,
# waiting for a port, the HTTP/1.1 and h2c backends, and the gRPC harness.

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# log MESSAGE: to stderr, prefixed with the script's name.
log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# need_tools TOOL...: exits (status 2) naming the first TOOL not on the PATH.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { log "$tool not found"; exit 2; }
    done
}

# need_built PATH WHAT: exits (status 2) unless PATH is an executable, saying to build WHAT
# (`--bin fulcrum`, `--example grpc_echo`).
need_built() {
    [[ -x $1 ]] || { log "build first: cargo build --release $2"; exit 2; }
}

# need_succeeded OUT N WHAT: exits (status 1) unless h2load's output in file OUT says all N
# succeeded, logging "WHAT succeeded" with h2load's request counts.
need_succeeded() {
    grep -q "$2 succeeded" "$1" || { log "$3 succeeded: $(grep requests: "$1")"; exit 1; }
}

# wait_port PORT: until something listens there (bounded, 60 s: valgrind starts slowly).
wait_port() {
    local i
    for ((i = 0; i < 600; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# counted FILE: the instructions in callgrind output FILE, less the start-up calibration of
# fastant's TSC clock (under fastrace): it spins for a stretch of wall-clock time, so under
# valgrind its count follows how slowly the process runs (5 to 19 million instructions from one
# run to the next, measured), not the requests; left in, it moves a per-request difference of
# 10 000 requests by hundreds of instructions.
counted() {
    local total calibration
    total=$(awk '/^summary:|^totals:/ { print $2; exit }' "$1")
    calibration=$(callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
        awk '/tsc_now::___init___ctor::___init___ctor \[/ { gsub(",", "", $1); print $1; exit }')
    echo $((total - ${calibration:-0}))
}

# start_h1_backend PORT [CPUS]: one nginx worker on 127.0.0.1:PORT (pinned to CPUS when given)
# answering /small (3 bytes), /16k (a file of 16 KiB) and /post (3 bytes, the body discarded),
# with keep-alive unbounded. Leaves a 1 KiB request body in $TMP/1k.
start_h1_backend() {
    local port=$1 pin=()
    [[ -n ${2:-} ]] && pin=(taskset -c "$2")
    # nginx's workers (user nobody) read the 16 KiB file from here.
    chmod 755 "$TMP"
    mkdir -p "$TMP/nginx"
    head -c 16384 /dev/zero | tr '\0' a >"$TMP/16k"
    head -c 1024 /dev/zero | tr '\0' b >"$TMP/1k"
    cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/nginx/pid; error_log $TMP/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off; client_body_temp_path $TMP/nginx;
    server {
        listen 127.0.0.1:$port; keepalive_requests 100000000;
        location = /small { return 200 "ok\n"; }
        location = /16k { alias $TMP/16k; }
        location = /post { return 200 "ok\n"; }
    }
}
EOF
    "${pin[@]}" nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" &
    PIDS+=($!)
    wait_port "$port" || { log "nginx did not start"; exit 1; }
}

# start_h2c_backends PORT1 PORT2: one nginx worker serving h2c (prior knowledge) on both ports,
# answering /small (3 bytes) with an `x-backend` field, as bench.sh's h2c workload's backends.
start_h2c_backends() {
    mkdir -p "$TMP/nginx-h2c"
    cat >"$TMP/nginx-h2c/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/nginx-h2c/pid; error_log $TMP/nginx-h2c/error.log;
events { worker_connections 1024; }
http {
    access_log off; client_body_temp_path $TMP/nginx-h2c; keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$1 http2; add_header X-Backend b1;
        location = /small { return 200 "ok\n"; }
    }
    server {
        listen 127.0.0.1:$2 http2; add_header X-Backend b2;
        location = /small { return 200 "ok\n"; }
    }
}
EOF
    nginx -c "$TMP/nginx-h2c/nginx.conf" -p "$TMP/nginx-h2c" &
    PIDS+=($!)
    { wait_port "$1" && wait_port "$2"; } || { log "nginx (h2c) did not start"; exit 1; }
}

# start_grpc_harness PORT_BASE [CPU [BACKENDS]]: what the gRPC scripts measure against. Sets BE1,
# BE2 and LB (PORT_BASE + 1, + 2, + 10), starts the tonic echo backends (examples/grpc_echo.rs,
# or ECHO_BIN) on BE1 and BE2 unless BACKENDS is `own` (the caller starts its own h2c backends
# there), writes HAProxy's `proto h2` config to $TMP/haproxy/haproxy.cfg (bench.sh's grpc
# suite's) and sets FULCRUM_GRPC, Fulcrum (target/release/fulcrum, or FULCRUM_BIN) on LB in
# front of both backends with one worker and no access log, to which the caller adds its flags.
# With CPU, the backends and grpc_load run pinned to it (GRPC_PIN).
start_grpc_harness() {
    BE1=$(($1 + 1))
    BE2=$(($1 + 2))
    LB=$(($1 + 10))
    GRPC_PIN=()
    [[ -n ${2:-} ]] && GRPC_PIN=(taskset -c "$2")
    need_tools h2load
    local fulcrum=${FULCRUM_BIN:-target/release/fulcrum} echo=${ECHO_BIN:-target/release/examples/grpc_echo}
    need_built "$fulcrum" "--bin fulcrum"
    if [[ ${3:-} != own ]]; then
        need_built "$echo" "--example grpc_echo"
        # EchoRequest { message: "hello" } in one gRPC frame.
        printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$TMP/body"
        "${GRPC_PIN[@]}" "$echo" "127.0.0.1:$BE1" "127.0.0.1:$BE2" >"$TMP/echo.log" 2>&1 &
        PIDS+=($!)
        wait_port "$BE1" || { log "echo backend did not start"; exit 1; }
    fi
    printf '[limits]\nmax_requests_per_connection = 0\n' >"$TMP/fulcrum.toml"
    # shellcheck disable=SC2034 # for the scripts that source this file
    FULCRUM_GRPC=("$fulcrum" --config "$TMP/fulcrum.toml" --listen "127.0.0.1:$LB"
        --admin-listen "127.0.0.1:$((LB + 1))" --backend "h2c://127.0.0.1:$BE1"
        --backend "h2c://127.0.0.1:$BE2" --workers 1 --access-log off)
    # shellcheck source-path=SCRIPTDIR source=peer_conf.sh
    source benches/peer_conf.sh
    write_haproxy_h2_conf "$TMP/haproxy" "$LB" "$BE1" "$BE2"
}

# grpc_load CALLS: CALLS gRPC unary calls (h2load, 4 connections x 8 streams, bench.sh's grpc
# suite's shape) through the balancer on LB, pinned as start_grpc_harness said.
grpc_load() {
    "${GRPC_PIN[@]}" h2load -n "$1" -c 4 -m 8 -d "$TMP/body" -H 'content-type: application/grpc' \
        -H 'te: trailers' "http://127.0.0.1:$LB/echo.Echo/Unary"
}

# grpc_calls NAME CALLS: grpc_load CALLS, its output in $TMP/NAME.h2load; exits unless every
# call succeeded.
grpc_calls() {
    grpc_load "$2" >"$TMP/$1.h2load" 2>&1
    need_succeeded "$TMP/$1.h2load" "$2" "$1: not every call"
}

# start_balancer NAME COMMAND...: starts the balancer COMMAND (its output in $TMP/NAME.log) and
# waits until it listens on LB; BALANCER holds its pid.
start_balancer() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    BALANCER=$!
    PIDS+=("$BALANCER")
    wait_port "$LB" || { log "$name did not start: $(tail -n 3 "$TMP/$name.log")"; exit 1; }
}

# stop_balancer: stops the balancer start_balancer started, and waits for it to exit.
stop_balancer() {
    kill -TERM "$BALANCER"
    wait "$BALANCER" 2>/dev/null || true
}
