#!/usr/bin/env bash
# bench.sh - side-by-side benchmark of Fulcrum against nginx and HAProxy.
#
# Layout (2 CPUs): the balancer under test runs alone on CPU 0 with one worker;
# the load generator (wrk) and the cheap backends (one nginx process serving
# two ports) share CPU 1. Every target runs in the same invocation, interleaved
# round by round, so machine noise spreads evenly over them.
#
# Headline figure: CPU time the balancer process spends per request
# (utime+stime from /proc/PID/stat over a run, divided by completed requests),
# next to req/s and p50/p99 latency, each as min/median/max over --runs runs.
#
# Adding a suite: write a function `suite_<name>` (see suite_http) that
# declares workloads with `workload`, starts targets with the start_* helpers
# and calls `bench_matrix`. It is then runnable as `./bench.sh <name>`.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./bench.sh [SUITE] [OPTIONS]

Suites:
  http            keep-alive GET small body, GET 16 KiB, POST 1 KiB (default), each also
                  against the L4 floor (relay: HAProxy mode tcp, one backend connection per
                  client connection); light load: GET small body at a fixed 200 and 2000
                  req/s (h2load --rps); then the targets' idle wake-ups per thread. Fulcrum
                  also as routes20-*: 20 routes (host and path matchers) in front of the
                  route that takes the benchmarked requests, against no routes; then the
                  h2c workload: h2load GETs over h2c through Fulcrum's native HTTP/2 engine,
                  HAProxy proto h2, nginx and an L4 relay (relay-h2c: HAProxy mode tcp), to
                  the same backends over h2c
  idle            wake-ups per second of each target's threads while idle (after 1 s of
                  load to fill the pools), from /proc/PID/task/*/schedstat, over --runs
                  windows of 5 s (min / median / max of each target's total)
  syscalls        system calls and thread runs per request of each target (perf stat on the
                  raw_syscalls:sys_enter tracepoint; /proc/PID/task/*/schedstat) for the
                  http suite's keep-alive workloads and its light-load rates (rate200,
                  rate2000); needs perf (Debian: linux-perf)
  logging         POST 1 KiB with the access log off, on without bodies, on with bodies
  grpc            gRPC unary over h2c (h2load) to two tonic echo backends: Fulcrum
                  (h2c://) on either HTTP/2 engine (fulcrum-*: hyperium h2, native-*:
                  fulcrum-h2) against nginx grpc_pass and HAProxy proto h2
  cache           cache hits, GET 1 KiB and 16 KiB: Fulcrum's response cache against
                  nginx proxy_cache
  ws              WebSocket: small text messages echoed on 50 tunnels (examples/ws_load.rs)
                  through the balancer to a WebSocket echo backend (examples/ws_echo.rs):
                  messages/s and CPU per message against nginx and HAProxy, and an
                  L4 relay (HAProxy mode tcp)
  tls             TLS termination with one ECDSA P-256 certificate (made with openssl in
                  a temp dir): keep-alive HTTPS GET 100 B and 16 KiB (wrk), full handshakes
                  (openssl s_time -new: a new connection, no resumption, per GET) and gRPC
                  unary over TLS (h2load, ALPN h2; Fulcrum also on its native HTTP/2
                  engine, native-*-grpc): Fulcrum against nginx and HAProxy with
                  the same protocols, cipher suites, groups and session tickets
  all             every suite above, one after another, then one combined table
                  (each suite also keeps its own report)
  soak            not part of `all`: Fulcrum alone under steady wrk load for --duration
                  (default 3m), then a connection flood, then idle, with its RSS sampled
                  every second (target/bench/soak-rss-<timestamp>.csv): memory flat under
                  load, and back to baseline after the flood?

Options:
  --runs N        measured runs per target and workload (default 3)
  --duration S    seconds per measured run (default 5); `Nm` = N minutes
  --connections C wrk connections (default 32)
  --flood N       soak: concurrent connections of each flood round (default 2000, at most a
                  third of `ulimit -n`)
  --quick         smoke test: 1 run of 2 s
  --no-build      do not run `cargo build --release` (use the existing release build as is)
  --grpc-backend B
                  grpc: the backends, `tonic` (examples/grpc_echo.rs, the default) or
                  `nghttpd` (Debian's nghttp2-server, not Rust: it echoes the call's message
                  back with a `grpc-status: 0` trailer)
  --workloads L   only these workloads (comma-separated shell patterns, e.g. small,16k,post1k,
                  rate200,rate2000,h2c for http, grpc for tls); --workload is the same
  --targets L     only these targets besides direct (comma-separated shell patterns:
                  'fulcrum-*,base-*,nginx,haproxy,relay')
  -h, --help      this text

Environment:
  BENCH_PORT_BASE first of the fixed loopback ports used (default 39100;
                  uses BASE+1..BASE+4 for backends, BASE+10..BASE+65 for balancers)
  FULCRUM_BIN     binary to measure (default $CARGO_TARGET_DIR/release/fulcrum, or
                  target/release/fulcrum; use with --no-build)
  BENCH_ACCESS_LOG
                  1: every Fulcrum target writes its access log (a file in the run's temporary
                  directory) instead of running with it off
  FULCRUM_BASELINE_BIN
                  another Fulcrum build measured beside it, as targets base-io_uring and
                  base-epoll (an A/B of two commits in one run), in the http, idle, syscalls,
                  cache, grpc, tls and ws suites (base-h2c-* in the http suite's h2c workload);
                  target/release/examples/l7_floor there is the least a proxy on Fulcrum's
                  runtime does (HTTP/1.1 parsing only; on h2c, Fulcrum's HTTP/2 engine alone)

Results are printed as markdown tables and written to target/bench/results-<timestamp>.md
(raw wrk output in target/bench/raw-<timestamp>.log).
EOF
}

# ---------------------------------------------------------------- settings --

RUNS=3
DURATION=5
WORKLOAD_FILTER=""
TARGET_FILTER=""
# Light load: the h2load connections that share a fixed request rate.
RATE_CONNECTIONS=8
# Idle wake-ups: seconds of quiet before, and seconds of each of the --runs windows measured.
IDLE_SETTLE=2
IDLE_SECS=5
DURATION_SET=0
FLOOD=2000
CONNECTIONS=32
WARMUP=1
BUILD=1
SUITE=http
LB_CPU=0
GEN_CPU=1
PORT_BASE=${BENCH_PORT_BASE:-39100}
# Every Fulcrum target's config file starts with this: like the peers' keepalive_requests 1000000,
# no per-connection request cap while measuring.
FULCRUM_BENCH_TOML=$'[limits]\nmax_requests_per_connection = 0\n'
BE1_PORT=$((PORT_BASE + 1))
BE2_PORT=$((PORT_BASE + 2))
# The same two backends spoken to over h2c (nginx `listen ... http2`), for the http suite's
# h2c workload.
BE1_H2C_PORT=$((PORT_BASE + 5))
BE2_H2C_PORT=$((PORT_BASE + 6))
FULCRUM_URING_PORT=$((PORT_BASE + 10))
FULCRUM_EPOLL_PORT=$((PORT_BASE + 11))
NGINX_PORT=$((PORT_BASE + 12))
HAPROXY_PORT=$((PORT_BASE + 13))
BASE_URING_PORT=$((PORT_BASE + 14))
BASE_EPOLL_PORT=$((PORT_BASE + 15))
ROUTES_URING_PORT=$((PORT_BASE + 16))
ROUTES_EPOLL_PORT=$((PORT_BASE + 17))
NATIVE_URING_PORT=$((PORT_BASE + 18))
NATIVE_EPOLL_PORT=$((PORT_BASE + 19))
RELAY_PORT=$((PORT_BASE + 25))
# A second Fulcrum binary measured side by side (an A/B of two builds in one run), when set.
FULCRUM_BASELINE_BIN=${FULCRUM_BASELINE_BIN:-}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

GRPC_BACKEND=tonic
# What wait_ready_grpc looks for in a call's answer.
GRPC_READY='^grpc-status: 0'
while (($#)); do
    case $1 in
        --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
        --duration)
            DURATION=${2:?--duration needs a value}
            DURATION=${DURATION%s}
            [[ $DURATION =~ ^([0-9]+)m$ ]] && DURATION=$((BASH_REMATCH[1] * 60))
            DURATION_SET=1
            shift 2
            ;;
        --flood) FLOOD=${2:?--flood needs a value}; shift 2 ;;
        --connections) CONNECTIONS=${2:?--connections needs a value}; shift 2 ;;
        --quick) RUNS=1; DURATION=2; DURATION_SET=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --grpc-backend) GRPC_BACKEND=${2:?--grpc-backend needs a value}; shift 2 ;;
        --workloads|--workload) WORKLOAD_FILTER=${2:?$1 needs a value}; shift 2 ;;
        --targets) TARGET_FILTER=${2:?--targets needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) SUITE=$1; shift ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer (seconds)"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "--connections must be a positive integer"
[[ $FLOOD =~ ^[1-9][0-9]*$ ]] || die "--flood must be a positive integer"
[[ $GRPC_BACKEND == tonic || $GRPC_BACKEND == nghttpd ]] ||
    die "--grpc-backend must be tonic or nghttpd"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
# Peer configurations shared with the scripts under benches/ (write_haproxy_conf, write_haproxy_h2_conf).
# shellcheck source-path=SCRIPTDIR source=benches/peer_conf.sh
source "$ROOT/benches/peer_conf.sh"

# ------------------------------------------------------------------ tools --

check_tools() {
    # tool -> Debian package
    local -A pkg=([wrk]=wrk [nginx]=nginx [haproxy]=haproxy [curl]=curl
        [taskset]=util-linux [getconf]=libc-bin [awk]=gawk [ss]=iproute2)
    local missing=() pkgs=() t
    for t in "${!pkg[@]}"; do
        if ! command -v "$t" >/dev/null 2>&1; then
            missing+=("$t")
            pkgs+=("${pkg[$t]}")
        fi
    done
    if ((${#missing[@]})); then
        printf '[bench] missing tools: %s\n' "${missing[*]}" >&2
        printf '[bench] install them with:\n  apt-get install -y %s\n' "${pkgs[*]}" >&2
        exit 1
    fi
    if ((BUILD)) && ! command -v cargo >/dev/null 2>&1; then
        die "cargo not found (install Rust via rustup, or pass --no-build)"
    fi
    (($(nproc) >= 2)) || die "needs at least 2 CPUs (balancer on CPU $LB_CPU, load on CPU $GEN_CPU)"
}

# ---------------------------------------------------------- process state --

TMP=""
PIDS=()
WRK_PID=""
declare -A T_URL=()    # target -> base URL
declare -A T_PID=()    # target -> PID whose CPU time is measured ("" = none)
declare -A T_DRIVER=() # target -> io driver text, or file:<stderr log> to grep
declare -A T_DEAD=()   # target -> reason it stopped being measured
declare -A T_NOTE=()   # target,workload -> problem seen by the keep-alive probe
TARGETS=()

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    [[ -z $WRK_PID ]] || kill -TERM "$WRK_PID" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n $TMP && -d $TMP ]] && rm -rf -- "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() {
    # Listening sockets on the port, any local address.
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

check_ports_free() {
    local p
    for p in "$@"; do
        port_in_use "$p" && die "port $p is already in use (set BENCH_PORT_BASE to move the port range)"
    done
    return 0
}

# wait_ready NAME PID URL: poll URL (bounded, 5 s) while PID is alive.
wait_ready() {
    local name=$1 pid=$2 url=$3 i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -fs -o /dev/null --max-time 1 "$url"; then
            return 0
        fi
        sleep 0.1
    done
    log "$name: not ready after 5 s ($url)"
    return 1
}

# check_pinning NAME PID CPU: warn if any thread may run outside CPU.
check_pinning() {
    local name=$1 pid=$2 cpu=$3 f list
    for f in /proc/"$pid"/task/*/status; do
        list=$(awk '/^Cpus_allowed_list:/ {print $2}' "$f" 2>/dev/null) || continue
        [[ -z $list || $list == "$cpu" ]] || log "warning: $name thread ${f%/status} allowed on CPUs $list, not $cpu"
    done
}

# CPU time of a process in nanoseconds: the sum over its threads of the time each spent on a
# CPU (first field of /proc/PID/task/TID/schedstat), exact where utime+stime (/proc/PID/stat)
# counts whole clock ticks (10 ms; a 200 req/s run of 5 s costs a few ticks). Threads that
# exited are not counted (the measured processes keep theirs). Without schedstat it falls
# back to utime+stime.
cpu_ns() {
    local f v total=0 n=0 s
    for f in /proc/"$1"/task/*/schedstat; do
        read -r v _ <"$f" 2>/dev/null || continue
        total=$((total + v))
        n=$((n + 1))
    done
    if ((n == 0)); then
        s=$(<"/proc/$1/stat")
        s=${s##*) } # the comm field may contain spaces and ')'
        read -ra f <<<"$s"
        # f[0] is field 3 (state), so fields 14 and 15 are f[11] and f[12].
        total=$(((f[11] + f[12]) * 1000000000 / CLK_TCK))
    fi
    echo "$total"
}

# want NAME FILTER: whether NAME matches one of the comma-separated shell patterns of FILTER
# (always, for an empty FILTER).
want() {
    local name=$1 filter=$2 pat
    [[ -z $filter ]] && return 0
    local IFS=,
    for pat in $filter; do
        # shellcheck disable=SC2053 # a pattern on purpose
        [[ $name == $pat ]] && return 0
    done
    return 1
}

# -------------------------------------------------------------- backends --

start_backends() {
    local dir=$TMP/backend
    mkdir -p "$dir/www" "$dir/tmp"
    head -c 16384 /dev/zero | tr '\0' 'x' >"$dir/www/16k"
    head -c 1024 /dev/zero | tr '\0' 'x' >"$dir/www/1k"
    head -c 100 /dev/zero | tr '\0' 'x' >"$dir/www/100b"
    local srv port name
    {
        nginx_conf_head "$dir" "    default_type application/octet-stream;" \
            "    keepalive_requests 1000000;" "    keepalive_timeout 75s;" "    sendfile on;" \
            "    open_file_cache max=16 inactive=60s;"
        for srv in "b1 $BE1_PORT $BE1_H2C_PORT" "b2 $BE2_PORT $BE2_H2C_PORT"; do
            read -r name port h2c_port <<<"$srv"
            # `return` answers without reading the request body; nginx then
            # discards the body (ngx_http_discard_request_body) so the
            # connection stays usable for keep-alive.
            cat <<EOF
    server {
        listen 127.0.0.1:$port backlog=4096;
        listen 127.0.0.1:$h2c_port http2 backlog=4096;
        root $dir/www;
        add_header X-Backend $name;
        location = /small { return 200 "ok\n"; }
        location = /16k { }
        location = /1k { }
        location = /100b { }
        location = /post { return 200 "ok\n"; }
        location / { return 404; }
    }
EOF
        done
        echo "}"
    } >"$dir/nginx.conf"
    taskset -c "$GEN_CPU" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        >"$dir/stdout.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    if ! wait_ready backend "$pid" "http://127.0.0.1:$BE1_PORT/small" ||
        ! wait_ready backend "$pid" "http://127.0.0.1:$BE2_PORT/small"; then
        die "backend nginx failed to start: $(tail -n 5 "$dir/error.log" "$dir/stdout.log" 2>/dev/null)"
    fi
    T_URL[direct]="http://127.0.0.1:$BE1_PORT"
    T_PID[direct]=""
    T_DRIVER[direct]="-"
}

# -------------------------------------------------------------- balancers --

# register_target NAME PID PORT DRIVER
register_target() {
    T_URL[$1]="http://127.0.0.1:$3"
    T_PID[$1]=$2
    T_DRIVER[$1]=$4
    check_pinning "$1" "$2" "$LB_CPU"
}

# start_peer NAME PORT READY-FN URL SHOWN OUT CMD...: CMD (nginx or HAProxy) on CPU 0, its output
# in OUT, pid in STARTED_PID; target NAME once READY-FN accepts URL (STARTED=1), else skipped
# with the last lines of SHOWN (STARTED empty).
start_peer() {
    local name=$1 port=$2 ready=$3 url=$4 shown=$5 out=$6
    shift 6
    taskset -c "$LB_CPU" "$@" >"$out" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    STARTED=""
    if "$ready" "$name" "$STARTED_PID" "$url"; then
        register_target "$name" "$STARTED_PID" "$port" epoll
        TARGETS+=("$name")
        STARTED=1
    else
        log "SKIPPING $name: $(tail -n 5 "$shown" 2>/dev/null)"
    fi
}

# start_fulcrum_process NAME PORT READY-FN URL CMD...: CMD (a Fulcrum) on CPU 0, its output in
# $TMP/NAME.stdout and $TMP/NAME.stderr; target NAME once READY-FN accepts URL (STARTED=1), else
# stopped and skipped with its last stderr lines (STARTED empty).
start_fulcrum_process() {
    local name=$1 port=$2 ready=$3 url=$4 err=$TMP/$1.stderr pid
    shift 4
    STARTED=""
    taskset -c "$LB_CPU" "$@" >"$TMP/$name.stdout" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    if ! "$ready" "$name" "$pid" "$url"; then
        log "SKIPPING $name: it did not become ready; last stderr lines:"
        tail -n 10 "$err" >&2 || true
        kill -TERM "$pid" 2>/dev/null || true
        return 0
    fi
    register_target "$name" "$pid" "$port" "file:$err"
    TARGETS+=("$name")
    STARTED=1
}

# start_nginx_peer NAME PORT READY-FN URL DIR: nginx with DIR/nginx.conf, as start_peer runs it
# (its error log shown when it does not start).
start_nginx_peer() {
    start_peer "$1" "$2" "$3" "$4" "$5/error.log" "$5/stdout.log" \
        nginx -p "$5" -e "$5/error.log" -c "$5/nginx.conf"
}

# start_haproxy_peer NAME PORT READY-FN URL DIR: HAProxy with DIR/haproxy.cfg, as start_peer runs it.
start_haproxy_peer() {
    start_peer "$1" "$2" "$3" "$4" "$5/stdout.log" "$5/stdout.log" haproxy -db -f "$5/haproxy.cfg"
}

# nginx_conf_head DIR [LINE...]: the start of every nginx.conf here, DIR's: one worker in the
# foreground, pid and error log in DIR, no access log; in the http block the LINEs (indented) and
# the temp paths under DIR/tmp. The caller writes the rest of the http block and closes it.
nginx_conf_head() {
    local dir=$1
    shift
    cat <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    server_tokens off;
EOF
    (($# == 0)) || printf '%s\n' "$@"
    cat <<EOF
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
EOF
}

# write_nginx_grpc_conf DIR PORT LISTEN-FLAGS BE1 BE2 [HTTP-LINES]: DIR/nginx.conf for nginx as
# an HTTP/2 proxy (one worker, `grpc_pass`, its only HTTP/2 upstream module) on PORT with
# LISTEN-FLAGS (`http2`, or `ssl http2` with the TLS settings in HTTP-LINES), in front of the
# h2c backends on ports BE1 and BE2 over kept-alive connections. Used by the grpc and tls
# suites and the http suite's h2c workload.
write_nginx_grpc_conf() {
    local dir=$1 port=$2 flags=$3 be1=$4 be2=$5 extra=${6:-}
    mkdir -p "$dir/tmp"
    {
        nginx_conf_head "$dir"
        cat <<EOF
    http2_max_requests 1000000;
    keepalive_requests 1000000;
$extra
    upstream grpc_backends {
        server 127.0.0.1:$be1;
        server 127.0.0.1:$be2;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port $flags backlog=4096;
        location / { grpc_pass grpc://grpc_backends; }
    }
}
EOF
    } >"$dir/nginx.conf"
}

# nginx as the HTTP/1.1 proxy of the http, cache and tls suites: one worker listening on PORT,
# keep-alive on both sides, round robin over both backends. HTTP_LINES are added to the http
# block and LOCATION_LINES to `location /` (each line indented and ending in `;`, or empty);
# LISTEN_OPTS to the listen directive (e.g. `ssl http2`).
write_nginx_proxy_conf() {
    local dir=$1 port=$2 http_extra=${3:-} location_extra=${4:-} listen_opts=${5:+ $5}
    mkdir -p "$dir/tmp"
    {
        nginx_conf_head "$dir" "    keepalive_requests 1000000;" "    keepalive_timeout 75s;"
        cat <<EOF
${http_extra}    upstream backends {
        server 127.0.0.1:$BE1_PORT;
        server 127.0.0.1:$BE2_PORT;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
    }
    server {
        listen 127.0.0.1:$port$listen_opts backlog=4096;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
${location_extra}        }
    }
}
EOF
    } >"$dir/nginx.conf"
}

start_nginx_proxy() {
    want nginx "$TARGET_FILTER" || return 0
    local dir=$TMP/nginx-proxy
    write_nginx_proxy_conf "$dir" "$NGINX_PORT"
    taskset -c "$LB_CPU" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        >"$dir/stdout.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_ready nginx "$pid" "http://127.0.0.1:$NGINX_PORT/small" ||
        die "nginx proxy failed to start: $(tail -n 5 "$dir/error.log" "$dir/stdout.log" 2>/dev/null)"
    register_target nginx "$pid" "$NGINX_PORT" epoll
    TARGETS+=(nginx)
}

start_haproxy() {
    want haproxy "$TARGET_FILTER" || return 0
    local dir=$TMP/haproxy
    mkdir -p "$dir"
    write_haproxy_conf "$dir/haproxy.cfg" http "option http-keep-alive;http-reuse always" \
        "timeout http-keep-alive 60s" "$HAPROXY_PORT" "" "$BE1_PORT" "$BE2_PORT" ""
    haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy config check failed"
    taskset -c "$LB_CPU" haproxy -db -f "$dir/haproxy.cfg" >"$dir/stdout.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_ready haproxy "$pid" "http://127.0.0.1:$HAPROXY_PORT/small" ||
        die "haproxy failed to start: $(tail -n 5 "$dir/stdout.log" 2>/dev/null)"
    register_target haproxy "$pid" "$HAPROXY_PORT" epoll
    TARGETS+=(haproxy)
}

# start_relay: the L4 floor. HAProxy in `mode tcp` relays each client connection to one backend
# connection (round robin over the same backends, same pinning) and parses nothing: the same
# two reads and two writes per request as any proxy, and no more. No L7 balancer can expect to
# cost less per request. Optional READY URL: the readiness check and its URL (default an
# HTTP GET of /small).
start_relay() {
    start_relay_on relay "$RELAY_PORT" "$BE1_PORT" "$BE2_PORT" "$@"
}

# start_relay_on NAME PORT BE1 BE2 [READY URL]: start_relay as target NAME on PORT, in front of
# the backends on ports BE1 and BE2 (the h2c workload's relay-h2c relays to the h2c backends).
start_relay_on() {
    local name=$1 port=$2 be1=$3 be2=$4
    want "$name" "$TARGET_FILTER" || return 0
    local ready=${5:-wait_ready} url=${6:-http://127.0.0.1:$port/small}
    local dir=$TMP/$name
    mkdir -p "$dir"
    write_haproxy_conf "$dir/haproxy.cfg" tcp "" "" "$port" "" "$be1" "$be2" ""
    haproxy -c -q -f "$dir/haproxy.cfg" || die "$name (haproxy mode tcp) config check failed"
    taskset -c "$LB_CPU" haproxy -db -f "$dir/haproxy.cfg" >"$dir/stdout.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    "$ready" "$name" "$pid" "$url" ||
        die "$name (haproxy mode tcp) failed to start: $(tail -n 5 "$dir/stdout.log" 2>/dev/null)"
    register_target "$name" "$pid" "$port" epoll
    TARGETS+=("$name")
}

# Where cargo puts the release build (CARGO_TARGET_DIR, when set, is taken from $ROOT).
RELEASE_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
FULCRUM_BIN=${FULCRUM_BIN:-$RELEASE_DIR/fulcrum}
FULCRUM_OK=""

# start_http1_targets [routes20]: the backends and the HTTP/1.1 targets of the http, syscalls
# and idle suites: Fulcrum on both drivers, with `routes20` the same build again with 20 routes
# in front of the one that takes the benchmarked requests, the baseline build when set, nginx,
# HAProxy and the L4 relay.
start_http1_targets() {
    local routes_ports=()
    [[ ${1:-} != routes20 ]] || routes_ports=("$ROUTES_URING_PORT" "$ROUTES_EPOLL_PORT")
    check_ports_free "$BE1_PORT" "$BE2_PORT" "$FULCRUM_URING_PORT" "$FULCRUM_EPOLL_PORT" \
        "$NGINX_PORT" "$HAPROXY_PORT" "${routes_ports[@]}" "$RELAY_PORT"
    prepare_fulcrum
    start_backends
    start_fulcrum io_uring "$FULCRUM_URING_PORT" http wait_ready /small ""
    start_fulcrum epoll "$FULCRUM_EPOLL_PORT" http wait_ready /small ""
    if ((${#routes_ports[@]})); then
        local routes
        routes=$(routes_toml http)
        START_AS=routes20 start_fulcrum io_uring "$ROUTES_URING_PORT" http wait_ready /small "$routes"
        START_AS=routes20 start_fulcrum epoll "$ROUTES_EPOLL_PORT" http wait_ready /small "$routes"
    fi
    start_baseline http wait_ready /small
    start_nginx_proxy
    start_haproxy
    start_relay
}

# Builds (unless --no-build) and checks the binary has the flags bench.sh uses.
# Sets FULCRUM_OK=1, or explains why Fulcrum is skipped.
prepare_fulcrum() {
    if ((BUILD)); then
        log "cargo build --release ..."
        if ! cargo build --release --bin fulcrum >"$TMP/cargo-build.log" 2>&1; then
            tail -n 20 "$TMP/cargo-build.log" >&2
            log "SKIPPING Fulcrum: cargo build --release failed (output above)"
            return 0
        fi
    fi
    if [[ ! -x $FULCRUM_BIN ]]; then
        log "SKIPPING Fulcrum: $FULCRUM_BIN does not exist"
        return 0
    fi
    local help flag
    help=$(timeout 5 "$FULCRUM_BIN" --help 2>&1 || true)
    for flag in --listen --backend --workers --io-driver; do
        if ! grep -q -- "$flag" <<<"$help"; then
            log "SKIPPING Fulcrum: '$FULCRUM_BIN --help' does not mention $flag"
            return 0
        fi
    done
    FULCRUM_OK=1
}

# start_fulcrum DRIVER PORT SCHEME READY_FN READY_PATH TOML [FLAGS...]: Fulcrum (1 worker, access
# log off) on CPU 0 in front of both backends spoken to as SCHEME (http or h2c), configured with
# $FULCRUM_BENCH_TOML plus TOML (more config text, may be empty), registered as a target once
# READY_FN (wait_ready or wait_ready_grpc) accepts http://127.0.0.1:PORT/READY_PATH.
start_fulcrum() {
    local driver=$1 port=$2 scheme=$3 ready=$4 path=$5 toml=$6
    local name=${START_AS:-fulcrum}-$1 bin=${START_BIN:-$FULCRUM_BIN}
    shift 6
    [[ -n $FULCRUM_OK ]] || return 0
    want "$name" "$TARGET_FILTER" || return 0
    printf '%s%s' "$FULCRUM_BENCH_TOML" "$toml" >"$TMP/$name.toml"
    local access=off
    [[ ${BENCH_ACCESS_LOG:-} != 1 ]] || access=$TMP/$name.access.log
    start_fulcrum_process "$name" "$port" "$ready" "http://127.0.0.1:$port$path" \
        "$bin" --config "$TMP/$name.toml" --listen "127.0.0.1:$port" \
        --backend "$scheme://127.0.0.1:$BE1_PORT" --backend "$scheme://127.0.0.1:$BE2_PORT" \
        --workers 1 --io-driver "$driver" --access-log "$access" "$@"
}

# start_baseline SCHEME READY_FN READY_PATH [TOML]: $FULCRUM_BASELINE_BIN, when set, on both
# drivers beside the measured build (targets base-io_uring, base-epoll), configured like
# start_fulcrum with TOML.
start_baseline() {
    local toml=${4:-}
    [[ -n $FULCRUM_BASELINE_BIN ]] || return 0
    if [[ ! -x $FULCRUM_BASELINE_BIN ]]; then
        log "SKIPPING the baseline: $FULCRUM_BASELINE_BIN is not an executable"
        return 0
    fi
    check_ports_free "$BASE_URING_PORT" "$BASE_EPOLL_PORT"
    START_AS=base START_BIN=$FULCRUM_BASELINE_BIN \
        start_fulcrum io_uring "$BASE_URING_PORT" "$1" "$2" "$3" "$toml"
    START_AS=base START_BIN=$FULCRUM_BASELINE_BIN \
        start_fulcrum epoll "$BASE_EPOLL_PORT" "$1" "$2" "$3" "$toml"
}

# routes_toml SCHEME: a pool `bench` of both backends, and 20 routes that the benchmarked
# requests pass (10 host routes, exact and wildcard, and 10 path routes) before the 21st, which
# takes them (host 127.0.0.1, path prefix /): every request runs 21 route matches.
routes_toml() {
    local scheme=$1 i
    printf '[[pools]]
name = "bench"
'
    printf '[[pools.backends]]
url = "%s://127.0.0.1:%s"
' "$scheme" "$BE1_PORT" "$scheme" "$BE2_PORT"
    for ((i = 0; i < 5; i++)); do
        printf '[[routes]]
pool = "bench"
host = "svc%d.bench.internal"
' "$i"
        printf '[[routes]]
pool = "bench"
host = "*.svc%d.bench.internal"
' "$i"
    done
    for ((i = 0; i < 10; i++)); do
        printf '[[routes]]
pool = "bench"
path_prefix = "/svc%d/api"
' "$i"
    done
    printf '[[routes]]
pool = "bench"
host = "127.0.0.1"
path_prefix = "/"
'
}

# The io driver Fulcrum reported (`driver=...` on stderr, one per worker).
driver_of() {
    local d=${T_DRIVER[$1]}
    if [[ $d == file:* ]]; then
        d=$(grep -o 'driver=[A-Za-z0-9_-]*' "${d#file:}" 2>/dev/null | cut -d= -f2 | sort -u | paste -sd, -)
        d=${d:-"? (no driver= on stderr)"}
    fi
    printf '%s' "$d"
}

# -------------------------------------------------------------- workloads --

declare -A W_PATH=() W_TITLE=() W_LUA=() W_CURL=() W_RATE=()
declare -A W_COUNTED=() # syscalls suite: workload -> the measure it wraps
# Optional, per workload: the targets measured (space-separated; default: direct and every
# target), the measuring function (default: measure, i.e. wrk) and the probe run once per
# target before the warm-up (default: probe; "-" for none).
declare -A W_TARGETS=() W_MEASURE=() W_PROBE=()
# Optional, per workload measured with measure_h2load: h2load's request options (default: a
# gRPC unary call).
declare -A W_H2LOAD=()
WORKLOADS=()

# wrk script: optional request setup plus a done() that prints one parseable line.
write_lua() {
    local file=$1 setup=$2
    cat >"$file" <<EOF
$setup
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
}

# workload NAME PATH TITLE [LUA-SETUP [CURL-ARGS]]
# LUA-SETUP sets up wrk's request; CURL-ARGS makes the same request with curl
# (for the keep-alive probe; split on whitespace).
workload() {
    want "$1" "$WORKLOAD_FILTER" || return 0
    W_PATH[$1]=$2
    W_TITLE[$1]=$3
    W_LUA[$1]=$TMP/wrk-$1.lua
    write_lua "${W_LUA[$1]}" "${4:-}"
    W_CURL[$1]=${5:-}
    WORKLOADS+=("$1")
}

# rate_workload NAME PATH RPS TITLE: GET PATH at a fixed RPS requests per second in total,
# paced by h2load (--rps, over RATE_CONNECTIONS keep-alive HTTP/1.1 connections) instead of
# wrk's closed loop: light load, where the balancer sleeps between requests.
rate_workload() {
    want "$1" "$WORKLOAD_FILTER" || return 0
    if ! command -v h2load >/dev/null 2>&1; then
        log "skipping workload $1: h2load not found (apt-get install -y nghttp2-client)"
        return 0
    fi
    W_PATH[$1]=$2
    W_RATE[$1]=$3
    W_TITLE[$1]=$4
    W_LUA[$1]=""
    W_CURL[$1]=""
    W_MEASURE[$1]=measure_rate
    WORKLOADS+=("$1")
}

# ------------------------------------------------------------- measuring --

RESULTS=$TMP/results # set again after TMP exists
SUITE_NOTES="" # extra markdown a suite appends to the results
RAW_LOG=""

# timed_run TARGET OUT CMD...: one load-generator run (in the background, so that a signal
# interrupts `wait` and cleanup runs at once) between two CPU readings of the target's process,
# left in T0 and T1 (0 for a target without a process). Returns 1, marking the target dead, when
# its process is gone before or after the run; dies when the generator fails.
T0=0
T1=0
timed_run() {
    local target=$1 out=$2 pid=${T_PID[$1]}
    shift 2
    T0=0 T1=0
    if [[ -n $pid ]]; then
        kill -0 "$pid" 2>/dev/null || { T_DEAD[$target]="process exited"; return 1; }
        T0=$(cpu_ns "$pid")
    fi
    "$@" >"$out" 2>&1 &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then
        WRK_PID=""
        cat "$out" >&2
        die "${4:-load generator} failed against $target (${*: -1})"
    fi
    WRK_PID=""
    if [[ -n $pid ]]; then
        if ! kill -0 "$pid" 2>/dev/null; then
            T_DEAD[$target]="process exited during a run"
            return 1
        fi
        T1=$(cpu_ns "$pid")
    fi
}

# measure TARGET WORKLOAD SECONDS [record]: one wrk run; with "record",
# appends "rps p50_ms p99_ms cpu_us_per_req connect read write status timeout requests".
measure() {
    local target=$1 wl=$2 secs=$3 record=${4:-}
    local url=${T_URL[$target]}${W_PATH[$wl]} out=$TMP/wrk.out
    timed_run "$target" "$out" taskset -c "$GEN_CPU" wrk -t1 -c"$CONNECTIONS" -d"${secs}s" \
        --latency -s "${W_LUA[$wl]}" "$url" || return 0
    record_bench "$target" "$wl" "$secs" "$record" "$out" wrk
}

# record_bench TARGET WORKLOAD SECONDS RECORD OUT TOOL: OUT (the output of one TOOL run, ending in
# a `BENCH key=value...` line) appended to the raw log and, when RECORD names a measured run, its
# result line (see `measure`) to the target's results.
record_bench() {
    local target=$1 wl=$2 secs=$3 record=$4 out=$5 tool=$6 pid=${T_PID[$1]}
    { printf '### %s %s %s %ss\n' "$target" "$wl" "${record:-warmup}" "$secs"; cat "$out"; } >>"$RAW_LOG"
    [[ -n $record ]] || return 0
    local line
    line=$(grep '^BENCH ' "$out") || die "no summary line in $tool output for $target/$wl"
    awk -v ns=$((T1 - T0)) -v haspid="${pid:+1}" '
        {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            rps = v["duration_us"] > 0 ? v["requests"] / (v["duration_us"] / 1e6) : 0
            cpu = (haspid && v["requests"] > 0) ? ns / 1000 / v["requests"] : "-"
            printf "%.0f %.3f %.3f %s %d %d %d %d %d %d\n", rps, v["p50_us"] / 1000, v["p99_us"] / 1000,
                (cpu == "-" ? "-" : sprintf("%.2f", cpu)),
                v["connect"], v["read"], v["write"], v["status"], v["timeout"], v["requests"]
        }' <<<"$line" >>"$RESULTS/$wl.$target"
    log "  $target/$wl: $(tail -n 1 "$RESULTS/$wl.$target")"
}

# h2load_record TARGET WORKLOAD OUT REQLOG SECS: appends the result line of one h2load run
# (as `measure` does) from its summary and per-request log; p50/p99 come from the log.
h2load_record() {
    local target=$1 wl=$2 out=$3 reqlog=$4 secs=$5 pid=${T_PID[$1]}
    local ok failed errored timedout pcts
    read -r ok failed errored timedout < <(awk '/^requests:/ {
        for (i = 2; i <= NF; i++) {
            if ($i ~ /^succeeded/) s = $(i - 1); if ($i ~ /^failed/) f = $(i - 1)
            if ($i ~ /^errored/) e = $(i - 1); if ($i ~ /^timeout/) t = $(i - 1)
        }
        print s + 0, f + 0, e + 0, t + 0 }' "$out")
    pcts=$(awk -F'\t' '{ print $3 }' "$reqlog" 2>/dev/null | sort -n | awk '{ a[n++] = $1 }
        END { if (n == 0) { print "0 0"; exit } print a[int(n * 0.5)], a[int(n * 0.99)] }')
    awk -v ns=$((T1 - T0)) -v haspid="${pid:+1}" -v ok="${ok:-0}" \
        -v failed="${failed:-0}" -v errored="${errored:-0}" -v to="${timedout:-0}" -v secs="$secs" \
        -v pcts="$pcts" 'BEGIN {
            split(pcts, p, " ")
            cpu = (haspid && ok > 0) ? sprintf("%.2f", ns / 1000 / ok) : "-"
            printf "%.0f %.3f %.3f %s %d %d %d %d %d %d\n", ok / secs, p[1] / 1000, p[2] / 1000, cpu,
                0, errored, 0, failed, to, ok
        }' >>"$RESULTS/$wl.$target"
    log "  $target/$wl: $(tail -n 1 "$RESULTS/$wl.$target")"
}

# measure_rate TARGET WORKLOAD SECONDS [record]: like `measure`, at the workload's fixed rate.
measure_rate() {
    local target=$1 wl=$2 secs=$3 record=${4:-}
    local url=${T_URL[$target]}${W_PATH[$wl]} out=$TMP/h2load.out reqlog=$TMP/h2load.reqlog
    local per=$((W_RATE[$wl] / RATE_CONNECTIONS))
    ((per > 0)) || per=1
    rm -f "$reqlog"
    timed_run "$target" "$out" taskset -c "$GEN_CPU" h2load --h1 -t1 -c"$RATE_CONNECTIONS" \
        --rps="$per" -D "$secs" --log-file="$reqlog" "$url" || return 0
    { printf '### %s %s %s %ss\n' "$target" "$wl" "${record:-warmup}" "$secs"; cat "$out"; } >>"$RAW_LOG"
    [[ -n $record ]] || return 0
    h2load_record "$target" "$wl" "$out" "$reqlog" "$secs"
}

# probe TARGET WORKLOAD: the workload's request twice on one connection; both
# must answer 2xx and the second must reuse the connection. Warns otherwise.
probe() {
    local target=$1 wl=$2 url out args=()
    url=${T_URL[$target]}${W_PATH[$wl]}
    read -ra args <<<"${W_CURL[$wl]}"
    out=$(curl -s --max-time 3 "${args[@]}" -o /dev/null -o /dev/null \
        -w '%{http_code}:%{num_connects} ' "$url" "$url" 2>/dev/null) || true
    if [[ ! $out =~ ^2[0-9][0-9]:1\ 2[0-9][0-9]:0\ $ ]]; then
        T_NOTE[$target,$wl]="keep-alive probe failed"
        log "warning: $target/$wl: 2 requests on one connection gave '${out:-nothing}' (want 2xx:1 2xx:0)"
    fi
}

# targets_of WORKLOAD: the workload's targets, one per line (W_TARGETS, or direct and every
# target).
targets_of() {
    local ts
    read -ra ts <<<"${W_TARGETS[$1]:-direct ${TARGETS[*]}}"
    printf '%s\n' "${ts[@]}"
}

# only_workload: with --workloads, drops the other workloads of suites that declare theirs
# without `workload` (tls).
only_workload() {
    [[ -n $WORKLOAD_FILTER ]] || return 0
    local wl kept=()
    for wl in "${WORKLOADS[@]}"; do
        ! want "$wl" "$WORKLOAD_FILTER" || kept+=("$wl")
    done
    WORKLOADS=("${kept[@]}")
}

# bench_matrix: warm up each target per workload, then RUNS rounds, each
# round visiting every target once (interleaved), then print the tables.
bench_matrix() {
    local wl fn pr ts
    only_workload
    for wl in "${WORKLOADS[@]}"; do
        mapfile -t ts < <(targets_of "$wl")
        fn=${W_MEASURE[$wl]:-measure}
        pr=${W_PROBE[$wl]:-probe}
        log "workload $wl: probe ($pr), then warm-up ${WARMUP}s per target"
        rounds "$wl" "$fn" "$pr" "${ts[@]}"
    done
}

# rounds WORKLOAD MEASURE PROBE TARGET...: per target PROBE ("-" for none) and a warm-up run of
# MEASURE, then RUNS rounds, each running MEASURE once on every live target (interleaved).
rounds() {
    local wl=$1 fn=$2 pr=$3 t r
    shift 3
    for t in "$@"; do
        [[ $pr == - ]] || "$pr" "$t" "$wl"
        "$fn" "$t" "$wl" "$WARMUP"
    done
    for ((r = 1; r <= RUNS; r++)); do
        log "workload $wl: round $r/$RUNS"
        for t in "$@"; do
            [[ -z ${T_DEAD[$t]:-} ]] || continue
            "$fn" "$t" "$wl" "$DURATION" "run$r"
        done
    done
}

# min/median/max of column COL of FILE, printf FMT per value.
stat3() {
    local file=$1 col=$2 fmt=$3
    awk -v c="$col" '{ print $c }' "$file" | sort -g | awk -v fmt="$fmt" '
        $1 == "-" { dash = 1; next }
        { a[n++] = $1 }
        END {
            if (dash || n == 0) { print "-"; exit }
            med = (n % 2) ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2
            printf fmt " / " fmt " / " fmt "\n", a[0], med, a[n - 1]
        }'
}

# errors_of FILE [NOTE]: wrk error counts summed over the runs, plus problems.
errors_of() {
    awk -v note="${2:-}" '{ for (i = 5; i <= 9; i++) s[i] += $i; if ($10 == 0) zero++ }
        END {
            split("connect read write non-2xx/3xx timeout", name, " ")
            out = ""
            for (i = 5; i <= 9; i++) if (s[i]) out = out (out ? ", " : "") name[i - 4] " " s[i]
            if (zero) out = out (out ? ", " : "") "NO RESPONSES in " zero " run(s)"
            if (note != "") out = out (out ? ", " : "") note
            print (out ? out : "0")
        }' "$1"
}

print_tables() {
    local wl t f ts
    for wl in "${WORKLOADS[@]}"; do
        printf '\n### %s\n\n' "${W_TITLE[$wl]}"
        printf '| target | io driver | req/s min / med / max | p50 ms min / med / max | p99 ms min / med / max | CPU us/req min / med / max | errors |\n'
        printf '|---|---|---|---|---|---|---|\n'
        mapfile -t ts < <(targets_of "$wl")
        for t in "${ts[@]}"; do
            f=$RESULTS/$wl.$t
            if [[ ! -s $f ]]; then
                printf '| %s | %s | - | - | - | - | %s |\n' "$t" "$(driver_of "$t")" "${T_DEAD[$t]:-no data}"
                continue
            fi
            printf '| %s | %s | %s | %s | %s | %s | %s%s |\n' "$t" "$(driver_of "$t")" \
                "$(stat3 "$f" 1 %.0f)" "$(stat3 "$f" 2 %.3f)" "$(stat3 "$f" 3 %.3f)" \
                "$(stat3 "$f" 4 %.2f)" "$(errors_of "$f" "${T_NOTE[$t,$wl]:-}")" \
                "${T_DEAD[$t]:+ (${T_DEAD[$t]} after $(wc -l <"$f") runs)}"
        done
    done
}

print_header() {
    local commit
    if commit=$(git rev-parse --short HEAD 2>/dev/null); then
        [[ -z $(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || commit="$commit+dirty"
    else
        commit=uncommitted
    fi
    printf '## Fulcrum benchmark: %s suite\n\n' "$SUITE"
    printf -- '- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf -- '- machine: %s vCPUs, %s\n' "$(nproc)" \
        "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf -- '- kernel: %s\n' "$(uname -r)"
    printf -- '- git commit: %s\n' "$commit"
    printf -- '- peers: %s, %s, wrk %s\n' "$(nginx -v 2>&1 | sed 's/^nginx version: //')" \
        "$(haproxy -v 2>/dev/null | awk 'NR == 1 { print "haproxy " $3 }')" \
        "$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')"
    printf -- '- load average (1, 5, 15 min) when the suite started: %s\n' "${LOAD_AT_START:-?}"
    if [[ $SUITE == tls ]]; then
        printf -- '- setup: balancer (1 worker) alone on CPU %s; the load generators (wrk -t1 -c%s, %s openssl s_time, h2load) and the backends (2 nginx servers in 1 process, 2 tonic echo servers in 1 process) on CPU %s; keep-alive to the backends\n' \
            "$LB_CPU" "$CONNECTIONS" "$S_TIME_CLIENTS" "$GEN_CPU"
    elif [[ $SUITE == ws ]]; then
        printf -- '- setup: balancer (1 worker) alone on CPU %s; examples/ws_load (%s tunnels, %s-byte messages) and examples/ws_echo (2 ports, 1 process) on CPU %s; CPU us/req is per echoed message\n' \
            "$LB_CPU" "$WS_TUNNELS" "$WS_MESSAGE" "$GEN_CPU"
    else
        printf -- '- setup: balancer (1 worker) alone on CPU %s; wrk -t1 -c%s and 2 nginx backends (1 process) on CPU %s; keep-alive on both sides\n' \
            "$LB_CPU" "$CONNECTIONS" "$GEN_CPU"
    fi
    if [[ $SUITE == soak ]]; then
        printf -- '- soak: %s s steady load, then %s flood rounds of %s s; RSS = VmRSS of the Fulcrum process, sampled every second\n' \
            "$DURATION" "$SOAK_FLOOD_ROUNDS" "$SOAK_FLOOD_SECS"
        return 0
    fi
    printf -- '- runs: %s x %ss per target and workload (after %ss warm-up), targets interleaved per round; min / median / max\n' \
        "$RUNS" "$DURATION" "$WARMUP"
    printf -- '- CPU us/req: balancer process CPU time over the run (sum of its threads'"'"' /proc/PID/task/*/schedstat, ns) / completed requests\n'
}

# ----------------------------------------------------------------- suites --

suite_http() {
    local body
    body=$(head -c 1024 /dev/zero | tr '\0' 'x')
    printf '%s' "$body" >"$TMP/body-1k"
    workload small /small "GET small body (3 B), keep-alive"
    workload 16k /16k "GET 16 KiB body, keep-alive"
    workload post1k /post "POST 1 KiB body, keep-alive" \
        "wrk.method = \"POST\"
wrk.body = \"$body\"
wrk.headers[\"Content-Type\"] = \"application/octet-stream\"" \
        "-H Content-Type:application/octet-stream --data-binary @$TMP/body-1k"
    rate_workload rate200 /small 200 "GET small body (3 B) at a fixed 200 req/s (light load)"
    rate_workload rate2000 /small 2000 "GET small body (3 B) at a fixed 2000 req/s (light load)"

    start_http1_targets routes20
    log "targets: direct ${TARGETS[*]}"
    bench_matrix
    floor_notes
    light_notes
    routes_notes
    h2c_workload
    idle_wakeups
}

# floor_notes: each target's median CPU per request as a ratio to the L4 relay's, per
# workload (closed-loop workloads).
floor_notes() {
    local wl t any=""
    for wl in "${WORKLOADS[@]}"; do
        [[ -z ${W_RATE[$wl]:-} && -s $RESULTS/$wl.relay ]] || continue
        if [[ -z $any ]]; then
            any=1
            SUITE_NOTES+=$'\n### CPU per request against the L4 floor (relay = HAProxy mode tcp)\n\n'
            SUITE_NOTES+=$'| workload | target | CPU us/req median | relay CPU us/req median | ratio to the relay | per round: min / median / max |\n|---|---|---|---|---|---|\n'
        fi
        for t in "${TARGETS[@]}"; do
            [[ $t != relay && -s $RESULTS/$wl.$t ]] || continue
            SUITE_NOTES+="| ${W_TITLE[$wl]} $(ratio_row "$t" "$RESULTS/$wl.$t" "$RESULTS/$wl.relay")"$'\n'
        done
    done
    [[ -z $any ]] ||
        SUITE_NOTES+=$'\nThe relay parses nothing and keeps one backend connection per client connection: the same two reads and two writes per request as any proxy, so no L7 balancer can expect to cost less (ratio 1.00).\n'
}

# light_notes: the fixed-rate workloads' CPU per request and p99 against nginx's.
light_notes() {
    local wl t np99 p99 any=""
    for wl in "${WORKLOADS[@]}"; do
        [[ -n ${W_RATE[$wl]:-} && -s $RESULTS/$wl.nginx ]] || continue
        if [[ -z $any ]]; then
            any=1
            SUITE_NOTES+=$'\n### Light load: CPU per request and p99 against nginx\n\n'
            SUITE_NOTES+=$'| workload | target | CPU us/req median | nginx CPU us/req median | ratio to nginx | per round: min / median / max | p99 ms median | nginx p99 ms median |\n|---|---|---|---|---|---|---|---|\n'
        fi
        np99=$(median_of "$RESULTS/$wl.nginx" 3)
        for t in "${TARGETS[@]}"; do
            [[ $t != nginx && -s $RESULTS/$wl.$t ]] || continue
            p99=$(median_of "$RESULTS/$wl.$t" 3)
            SUITE_NOTES+="| ${W_TITLE[$wl]} $(ratio_row "$t" "$RESULTS/$wl.$t" "$RESULTS/$wl.nginx")"
            SUITE_NOTES+=$(awk -v p="$p99" -v np="$np99" 'BEGIN { printf " %.3f | %.3f |", p, np }')$'\n'
        done
    done
    [[ -z $any ]] || SUITE_NOTES+=$'\nh2load --h1 paces the requests (--rps per connection, '"$RATE_CONNECTIONS"$' keep-alive connections); between two requests the balancer has nothing to do, so what it costs while waiting counts per request.\n'
}

# thread_wakeups PID: "TID comm pcount" per thread (pcount, the third field of schedstat, is the
# number of times the thread was put on a CPU).
thread_wakeups() {
    local f tid comm v
    for f in /proc/"$1"/task/*; do
        tid=${f##*/}
        read -r _ _ v <"$f/schedstat" 2>/dev/null || continue
        comm=$(<"$f/comm") 2>/dev/null || continue
        printf '%s %s %s\n' "$tid" "${comm// /_}" "$v"
    done
}

# idle_wakeups: with no traffic (after IDLE_SETTLE s of quiet), how often each thread of each
# target runs, from /proc/PID/task/*/schedstat, over RUNS back-to-back windows of IDLE_SECS s
# (every target measured over the same windows); appended to the suite notes: each target's
# total per window (min / median / max) and each thread's rate over all windows.
idle_wakeups() {
    local t pid r rows="" totals=""
    declare -A first=() snap=() per=()
    log "idle wake-ups: ${IDLE_SETTLE}s quiet, then $RUNS windows of ${IDLE_SECS}s"
    sleep "$IDLE_SETTLE"
    for t in "${TARGETS[@]}"; do
        pid=${T_PID[$t]}
        [[ -n $pid && -z ${T_DEAD[$t]:-} ]] || continue
        snap[$t]=$(thread_wakeups "$pid")
        first[$t]=${snap[$t]}
    done
    for ((r = 1; r <= RUNS; r++)); do
        sleep "$IDLE_SECS"
        for t in "${!snap[@]}"; do
            local now
            now=$(thread_wakeups "${T_PID[$t]}")
            per[$t]+=$(awk -v secs="$IDLE_SECS" 'NR == FNR { b[$1] = $3; next }
                ($1 in b) { n += $3 - b[$1] } END { printf "%.1f ", n / secs }' \
                <(printf '%s\n' "${snap[$t]}") <(printf '%s\n' "$now"))
            snap[$t]=$now
        done
    done
    for t in "${TARGETS[@]}"; do
        [[ -n ${snap[$t]:-} ]] || continue
        rows+=$(awk -v t="$t" -v secs=$((IDLE_SECS * RUNS)) '
            NR == FNR { b[$1] = $3; next }
            ($1 in b) { printf "| %s | %s | %.1f |\n", t, $2, ($3 - b[$1]) / secs }' \
            <(printf '%s\n' "${first[$t]}") <(printf '%s\n' "${snap[$t]}"))$'\n'
        totals+=$(tr ' ' '\n' <<<"${per[$t]}" | awk 'NF' | sort -g | awk -v t="$t" '
            { a[n++] = $1 }
            END { printf "| %s | %.1f / **%.1f** / %.1f |", t, a[0], (n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2), a[n - 1] }')$'\n'
    done
    SUITE_NOTES+=$'\n### Idle wake-ups per second (no traffic)\n\n'
    SUITE_NOTES+="With no traffic, ${IDLE_SETTLE} s after the last request (upstream keep-alive connections still pooled): how many times each thread was put on a CPU (/proc/PID/task/TID/schedstat, third field), per second, over $RUNS windows of ${IDLE_SECS} s."$'\n\n'
    SUITE_NOTES+=$'| target | all threads, wake-ups/s per window: min / median / max |\n|---|---|\n'
    SUITE_NOTES+="$totals"
    SUITE_NOTES+=$'\n| target | thread | wake-ups/s over all windows |\n|---|---|---|\n'
    SUITE_NOTES+="$rows"
}

# `./bench.sh syscalls`: system calls per request, counted by perf on the raw_syscalls:sys_enter
# tracepoint of the target's process over one run of each workload (the tracepoint slows every
# system call, so the CPU column of this suite is not comparable to the http suite's). Not
# affected by the machine's load: the count is what the code does, where CPU time is noisy.
suite_syscalls() {
    command -v perf >/dev/null 2>&1 || die "perf not found: apt-get install -y linux-perf"
    local body
    body=$(head -c 1024 /dev/zero | tr '\0' 'x')
    printf '%s' "$body" >"$TMP/body-1k"
    workload small /small "GET small body (3 B), keep-alive: system calls per request"
    workload 16k /16k "GET 16 KiB body, keep-alive: system calls per request"
    workload post1k /post "POST 1 KiB body, keep-alive: system calls per request" \
        "wrk.method = \"POST\"
wrk.body = \"$body\"
wrk.headers[\"Content-Type\"] = \"application/octet-stream\"" \
        "-H Content-Type:application/octet-stream --data-binary @$TMP/body-1k"
    rate_workload rate200 /small 200 "GET small body (3 B) at a fixed 200 req/s (light load)"
    rate_workload rate2000 /small 2000 "GET small body (3 B) at a fixed 2000 req/s (light load)"
    local wl
    for wl in "${WORKLOADS[@]}"; do
        W_COUNTED[$wl]=${W_MEASURE[$wl]:-measure}
        W_MEASURE[$wl]=measure_syscalls
    done
    start_http1_targets
    log "targets: direct ${TARGETS[*]}"
    bench_matrix
    local t f line
    SUITE_NOTES+=$'\n### System calls and thread runs per request\n\n| workload | target | system calls per request min / med / max | thread runs per request min / med / max |\n|---|---|---|---|\n'
    for wl in "${WORKLOADS[@]}"; do
        for t in "${TARGETS[@]}"; do
            f=$RESULTS/$wl.$t.syscalls
            [[ -s $f ]] || continue
            SUITE_NOTES+="| ${W_TITLE[$wl]%%:*} | $t | $(spread_of "$f") | $(spread_of "$RESULTS/$wl.$t.runs") |"$'\n'
        done
    done
    SUITE_NOTES+=$'\nperf stat -e raw_syscalls:sys_enter on the target process for the length of each load-generator run, divided by the requests it served. io_uring operations are not system calls: they are counted in the io_uring_enter calls that submit and reap them. Thread runs: how many times the process\'s threads were put on a CPU over the run (/proc/PID/task/*/schedstat, third field), per request: at light load, the wake-ups each request costs.\n'
}

# spread_of FILE: "min / median / max" of the numbers in FILE, one per line.
spread_of() {
    sort -g "$1" | awk '{ a[n++] = $1 }
        END { if (n) printf "%.2f / %.2f / %.2f", a[0], (n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2), a[n - 1] }'
}

# measure_syscalls TARGET WORKLOAD SECONDS [record]: the workload's own measure (W_COUNTED), with
# perf counting the target's system calls and schedstat its threads' runs over the run; with
# "record", appends the count per request to $RESULTS/WORKLOAD.TARGET.syscalls and .runs.
measure_syscalls() {
    local target=$1 wl=$2 secs=$3 record=${4:-} pid=${T_PID[$1]} inner=${W_COUNTED[$2]}
    if [[ -z $pid || -z $record ]]; then
        "$inner" "$@"
        return 0
    fi
    local stat=$TMP/perf.stat perf_pid before after calls runs0 runs1
    perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$stat" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.2 # perf attaches
    before=$({ wc -l <"$RESULTS/$wl.$target"; } 2>/dev/null || echo 0)
    runs0=$(thread_runs "$pid")
    "$inner" "$@"
    runs1=$(thread_runs "$pid")
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    after=$({ wc -l <"$RESULTS/$wl.$target"; } 2>/dev/null || echo 0)
    ((after > before)) || return 0
    calls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$stat")
    # Requests of this run: the last column of the line the measure appended.
    per_request() {
        awk -v c="$1" '{ n = $NF } END { if (n > 0) printf "%.3f\n", c / n }' \
            <(tail -n 1 "$RESULTS/$wl.$target")
    }
    per_request "${calls:-0}" >>"$RESULTS/$wl.$target.syscalls"
    per_request $((runs1 - runs0)) >>"$RESULTS/$wl.$target.runs"
    log "  $target/$wl: $(tail -n 1 "$RESULTS/$wl.$target.syscalls") system calls and $(tail -n 1 "$RESULTS/$wl.$target.runs") thread runs per request"
}

# thread_runs PID: how many times the threads of PID have been put on a CPU so far.
thread_runs() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ n += $3 } END { print n + 0 }'
}

# `./bench.sh idle`: the idle wake-ups alone (Fulcrum on both drivers, the baseline build when
# set, nginx, HAProxy and the relay), after 1 s of load on each to fill the pools.
suite_idle() {
    workload small /small "GET small body (3 B), keep-alive"
    start_http1_targets
    log "targets: ${TARGETS[*]}"
    local t
    for t in "${TARGETS[@]}"; do
        measure "$t" small 1
    done
    WORKLOADS=() # nothing recorded: no load tables
    idle_wakeups
}

# ------------------------------------------------------------ http: h2c --
# The http suite's h2c workload: an HTTP/2 client (h2load over h2c, H2_CLIENTS connections with
# CONNECTIONS / H2_CLIENTS streams each) GETs /small through each balancer from the same two
# nginx backends spoken to over h2c: Fulcrum on its native HTTP/2 engine (native-h2c-*),
# HAProxy `proto h2` on both sides, nginx (h2c front, `grpc_pass`, its only HTTP/2 upstream
# module, to the h2c backends), and the L4 relay (relay-h2c: HAProxy `mode tcp`, one backend
# connection per client connection, as start_relay). Its own targets, measured after the
# HTTP/1.1 workloads.

# wait_ready_h2c NAME PID URL: URL answers 200 over h2c with prior knowledge (bounded, 5 s).
wait_ready_h2c() {
    local name=$1 pid=$2 url=$3 i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        [[ $(curl -s --http2-prior-knowledge --max-time 1 -o /dev/null -w '%{http_code}' \
            "$url" 2>/dev/null) == 200 ]] && return 0
        sleep 0.1
    done
    log "$name: not ready after 5 s ($url)"
    return 1
}

h2c_workload() {
    want h2c "$WORKLOAD_FILTER" || return 0
    command -v h2load >/dev/null 2>&1 || { log "SKIPPING the h2c workload: no h2load"; return 0; }
    local wl=h2c nu=$((PORT_BASE + 80)) ne=$((PORT_BASE + 81)) ng=$((PORT_BASE + 82))
    local hp=$((PORT_BASE + 83)) bu=$((PORT_BASE + 84)) be=$((PORT_BASE + 85))
    local rl=$((PORT_BASE + 86)) dir
    check_ports_free "$nu" "$ne" "$ng" "$hp" "$rl"
    W_PATH[$wl]=/small
    W_TITLE[$wl]="GET small body (3 B) over h2c to h2c backends, h2load $H2_CLIENTS connections x $((CONNECTIONS / H2_CLIENTS)) streams"
    W_H2LOAD[$wl]=""
    local targets=(direct-h2c)
    T_URL[direct-h2c]="http://127.0.0.1:$BE1_H2C_PORT"
    T_PID[direct-h2c]=""
    T_DRIVER[direct-h2c]="-"
    # The backends' own process is not tracked here: the bench shell stands in for it.
    if ! wait_ready_h2c backend "$$" "${T_URL[direct-h2c]}/small"; then
        log "SKIPPING the h2c workload: the backends do not answer over h2c"
        return 0
    fi
    WORKLOADS+=("$wl")

    local before=("${TARGETS[@]}")
    START_AS=native-h2c start_fulcrum_h2c io_uring "$nu"
    START_AS=native-h2c start_fulcrum_h2c epoll "$ne"
    if [[ -x $FULCRUM_BASELINE_BIN ]]; then
        check_ports_free "$bu" "$be"
        START_AS=base-h2c START_BIN=$FULCRUM_BASELINE_BIN start_fulcrum_h2c io_uring "$bu"
        START_AS=base-h2c START_BIN=$FULCRUM_BASELINE_BIN start_fulcrum_h2c epoll "$be"
    fi

    dir=$TMP/nginx-h2c
    write_nginx_grpc_conf "$dir" "$ng" http2 "$BE1_H2C_PORT" "$BE2_H2C_PORT"
    start_nginx_peer nginx-h2c "$ng" wait_ready_h2c "http://127.0.0.1:$ng/small" "$dir"

    dir=$TMP/haproxy-h2c
    write_haproxy_h2_conf "$dir" "$hp" "$BE1_H2C_PORT" "$BE2_H2C_PORT"
    start_haproxy_peer haproxy-h2c "$hp" wait_ready_h2c "http://127.0.0.1:$hp/small" "$dir"
    start_relay_on relay-h2c "$rl" "$BE1_H2C_PORT" "$BE2_H2C_PORT" \
        wait_ready_h2c "http://127.0.0.1:$rl/small"

    # This workload's targets: those started above, measured on their own.
    targets+=("${TARGETS[@]:${#before[@]}}")
    W_TARGETS[$wl]="${targets[*]}"
    TARGETS=("${before[@]}")
    log "workload $wl: targets ${targets[*]}"
    rounds "$wl" measure_h2load - "${targets[@]}"
    h2c_notes "${targets[@]}"
}

# start_fulcrum_h2c DRIVER PORT: Fulcrum (1 worker, native HTTP/2 engine, access log off) on
# CPU 0 in front of the h2c backends, as target ${START_AS}-DRIVER (${START_BIN} when set, the
# baseline's base-h2c-* targets).
start_fulcrum_h2c() {
    local driver=$1 port=$2 name=${START_AS:-fulcrum}-$1 bin=${START_BIN:-$FULCRUM_BIN}
    [[ -n $FULCRUM_OK ]] || return 0
    want "$name" "$TARGET_FILTER" || return 0
    printf '%s' "$FULCRUM_BENCH_TOML" >"$TMP/$name.toml"
    start_fulcrum_process "$name" "$port" wait_ready_h2c "http://127.0.0.1:$port/small" \
        "$bin" --config "$TMP/$name.toml" --listen "127.0.0.1:$port" \
        --backend "h2c://127.0.0.1:$BE1_H2C_PORT" --backend "h2c://127.0.0.1:$BE2_H2C_PORT" \
        --workers 1 --io-driver "$driver" --access-log off --http2-engine native
}

# h2c_notes TARGET...: CPU per request of Fulcrum, nginx and the relay against HAProxy's
# (Fulcrum's target: at most 0.8), then of every target against the relay's.
h2c_notes() {
    local t f h r
    h=$RESULTS/h2c.haproxy-h2c
    [[ -s $h ]] || return 0
    SUITE_NOTES+=$'\n### h2c: CPU per request against HAProxy\n\n| target | CPU us/req median | haproxy-h2c CPU us/req median | ratio (Fulcrum target <= 0.80) | per round: min / median / max |\n|---|---|---|---|---|\n'
    for t in "$@"; do
        [[ $t == native-h2c-* || $t == base-h2c-* || $t == nginx-h2c || $t == relay-h2c ]] || continue
        f=$RESULTS/h2c.$t
        [[ -s $f ]] || continue
        SUITE_NOTES+="$(ratio_row "$t" "$f" "$h")"$'\n'
    done
    r=$RESULTS/h2c.relay-h2c
    if [[ -s $r ]]; then
        SUITE_NOTES+=$'\n### h2c: CPU per request against the L4 relay (relay-h2c = HAProxy mode tcp)\n\n| target | CPU us/req median | relay-h2c CPU us/req median | ratio | per round: min / median / max |\n|---|---|---|---|---|\n'
        for t in "$@"; do
            [[ $t != direct-h2c && $t != relay-h2c && -s $RESULTS/h2c.$t ]] || continue
            SUITE_NOTES+="$(ratio_row "$t" "$RESULTS/h2c.$t" "$r")"$'\n'
        done
        SUITE_NOTES+=$'\nThe relay passes each client connection to one backend connection and parses nothing; the L7 targets multiplex the streams over their own backend connections, so their kernel work per request can be below the relay\'s.\n'
    fi
    SUITE_NOTES+=$'\nh2c: h2load counts a request as succeeded on a 2xx answer. nginx has no HTTP/2 proxy module but grpc_pass, which it uses here for plain HTTP/2 requests.\n'
}

# routes_notes: CPU per request of routes20-* against fulcrum-* (no routes), per workload.
routes_notes() {
    local wl d base with any=""
    for wl in "${WORKLOADS[@]}"; do
        for d in io_uring epoll; do
            [[ -s $RESULTS/$wl.fulcrum-$d && -s $RESULTS/$wl.routes20-$d ]] || continue
            if [[ -z $any ]]; then
                any=1
                SUITE_NOTES+=$'\n### Routing cost: 20 routes in front of the benchmarked route\n\n'
                SUITE_NOTES+=$'| workload | io driver | CPU us/req median, no routes | CPU us/req median, 20 routes | difference (target <= +3%) |\n|---|---|---|---|---|\n'
            fi
            base=$(median_of "$RESULTS/$wl.fulcrum-$d" 4)
            with=$(median_of "$RESULTS/$wl.routes20-$d" 4)
            SUITE_NOTES+=$(awk -v w="${W_TITLE[$wl]}" -v d="$d" -v b="$base" -v r="$with" \
                'BEGIN { printf "| %s | %s | %.2f | %.2f | %+.1f%% |", w, d, b, r, (b > 0 ? (r / b - 1) * 100 : 0) }')
            SUITE_NOTES+=$'\n'
        done
    done
    [[ -n $any ]] || return 0
    SUITE_NOTES+=$'\nroutes20-*: pool `bench` (both backends) behind 21 routes; each request fails 20 (5 exact hosts, 5 wildcard hosts, 10 path prefixes) and matches the 21st (host 127.0.0.1 and path prefix /).\n'
}

# start_fulcrum_variant NAME PORT [FLAGS...]: Fulcrum (io_uring, 1 worker) under NAME, with
# extra flags; its admin API on PORT+100 (for /metrics) when the flags give it a JWT secret.
start_fulcrum_variant() {
    local name=$1 port=$2
    shift 2
    [[ -n $FULCRUM_OK ]] || return 0
    start_fulcrum_process "$name" "$port" wait_ready "http://127.0.0.1:$port/small" \
        "$FULCRUM_BIN" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 100))" \
        --backend "http://127.0.0.1:$BE1_PORT" --backend "http://127.0.0.1:$BE2_PORT" \
        --workers 1 --io-driver io_uring "$@"
}

# median of column COL of FILE.
median_of() {
    awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '{ a[n++] = $1 }
        END { if (n == 0) { print 0; exit } print (n % 2) ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2 }'
}

# round_ratios FILE REF-FILE: min / median / max over the rounds of FILE's CPU per request
# (column 4) divided by REF-FILE's in the same round. The targets run interleaved, round by
# round, so each pair was measured under the same load on the machine: the spread of these
# ratios is the comparison's own, not the machine's. "-" when the two do not have one result
# per round each.
round_ratios() {
    [[ -s $1 && -s $2 && $(wc -l <"$1") -eq $(wc -l <"$2") ]] || { printf -- '-'; return 0; }
    paste -d' ' <(awk '{ print $4 }' "$1") <(awk '{ print $4 }' "$2") |
        awk '$2 > 0 { print $1 / $2 }' | sort -g | awk '{ a[n++] = $1 }
        END { if (n == 0) { printf "-"; exit }
            printf "%.2f / %.2f / %.2f", a[0], (n % 2) ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2, a[n - 1] }'
}

# ratio_row TARGET FILE REF-FILE: the cells "| TARGET | CPU | REF's CPU | ratio | per round |"
# of a comparison table: the medians of the CPU per request (column 4) of FILE and REF-FILE,
# their ratio, and round_ratios' min / median / max.
ratio_row() {
    local cpu ref
    cpu=$(median_of "$2" 4)
    ref=$(median_of "$3" 4)
    awk -v t="$1" -v c="$cpu" -v r="$ref" -v p="$(round_ratios "$2" "$3")" \
        'BEGIN { printf "| %s | %.2f | %.2f | %.2f | %s |", t, c, r, (r > 0 ? c / r : 0), p }'
}

suite_logging() {
    local body
    body=$(head -c 1024 /dev/zero | tr '\0' 'x')
    printf '%s' "$body" >"$TMP/body-1k"
    workload post1k /post "POST 1 KiB body, keep-alive" \
        "wrk.method = \"POST\"
wrk.body = \"$body\"
wrk.headers[\"Content-Type\"] = \"application/octet-stream\"" \
        "-H Content-Type:application/octet-stream --data-binary @$TMP/body-1k"

    local off=$((PORT_BASE + 20)) nobody=$((PORT_BASE + 21)) full=$((PORT_BASE + 22)) p
    check_ports_free "$BE1_PORT" "$BE2_PORT" "$off" "$nobody" "$full" \
        $((off + 100)) $((nobody + 100)) $((full + 100))
    prepare_fulcrum
    start_backends
    local secret=bench-logging-secret-0123456789abcdef
    printf '%s[admin]\njwt_secret = "%s"\n[telemetry]\nlog_body_max_bytes = 0\n' "$FULCRUM_BENCH_TOML" "$secret" >"$TMP/log-nobody.toml"
    printf '%s[admin]\njwt_secret = "%s"\n[telemetry]\nlog_body_max_bytes = 4096\n' "$FULCRUM_BENCH_TOML" "$secret" >"$TMP/log-body.toml"
    printf '%s[admin]\njwt_secret = "%s"\n' "$FULCRUM_BENCH_TOML" "$secret" >"$TMP/log-off.toml"
    start_fulcrum_variant log-off "$off" --config "$TMP/log-off.toml" --access-log off
    start_fulcrum_variant log-nobody "$nobody" --config "$TMP/log-nobody.toml" \
        --access-log "$TMP/access-nobody.log"
    start_fulcrum_variant log-body "$full" --config "$TMP/log-body.toml" \
        --access-log "$TMP/access-body.log"
    log "targets: direct ${TARGETS[*]}"
    bench_matrix

    # Records dropped (the writer fell behind) and the cost relative to logging off.
    local t d dropped base med
    SUITE_NOTES=$'\n### Access logging cost\n\n| target | access log | req/s median vs log-off | CPU us/req median vs log-off | records dropped |\n|---|---|---|---|---|\n'
    base=$(median_of "$RESULTS/post1k.log-off" 1 2>/dev/null || echo 0)
    local base_cpu
    base_cpu=$(median_of "$RESULTS/post1k.log-off" 4 2>/dev/null || echo 0)
    for t in log-off log-nobody log-body; do
        [[ -s $RESULTS/post1k.$t ]] || continue
        case $t in
            log-off) p=$((off + 100)); d="off" ;;
            log-nobody) p=$((nobody + 100)); d="file, no body" ;;
            log-body) p=$((full + 100)); d="file, 1 KiB body captured" ;;
        esac
        dropped=$(curl -fs --max-time 2 "http://127.0.0.1:$p/metrics" |
            awk '$1 == "fulcrum_access_log_dropped_total" { print $2 }')
        med=$(median_of "$RESULTS/post1k.$t" 1)
        local cpu
        cpu=$(median_of "$RESULTS/post1k.$t" 4)
        SUITE_NOTES+=$(awk -v t="$t" -v d="$d" -v m="$med" -v b="$base" -v c="$cpu" -v bc="$base_cpu" -v dr="${dropped:-?}" \
            'BEGIN { printf "| %s | %s | %+.1f%% | %+.1f%% | %s |\n", t, d, (b > 0 ? (m / b - 1) * 100 : 0), (bc > 0 ? (c / bc - 1) * 100 : 0), dr }')
        SUITE_NOTES+=$'\n'
    done
    SUITE_NOTES+=$'\nTarget: full body logging costs at most 10% of throughput (log-body vs log-off).\n'
}

# ----------------------------------------------------------------- cache --
# Every measured request is a cache hit: the warm-up fills the caches, and both caches keep
# entries far longer than the runs last (Fulcrum ttl_ms 10 min, nginx proxy_cache_valid 10m).

# hit_check TARGET PATH: the second of two requests must report a hit; warns otherwise.
hit_check() {
    local target=$1 path=$2 url h
    url=${T_URL[$target]}$path
    curl -fs --max-time 2 -o /dev/null "$url" || true
    h=$(curl -fs --max-time 2 -o /dev/null -D - "$url" 2>/dev/null | tr -d '\r' |
        awk -F': *' 'tolower($1) == "x-cache" { print $2 }')
    [[ $h == HIT ]] || log "warning: $target$path: second request reported X-Cache '${h:-none}', not HIT"
}

suite_cache() {
    workload c1k /1k "GET 1 KiB, cache hit, keep-alive"
    workload c16k /16k "GET 16 KiB, cache hit, keep-alive"
    local fu=$((PORT_BASE + 30)) fe=$((PORT_BASE + 31)) ng=$((PORT_BASE + 32))
    check_ports_free "$BE1_PORT" "$BE2_PORT" "$fu" "$fe" "$ng"
    prepare_fulcrum
    start_backends
    local cache=$'[cache]\nenabled = true\nttl_ms = 600000\n'
    start_fulcrum io_uring "$fu" http wait_ready /1k "$cache"
    start_fulcrum epoll "$fe" http wait_ready /1k "$cache"
    start_baseline http wait_ready /1k "$cache"

    local dir=$TMP/nginx-cache
    mkdir -p "$dir/cache"
    write_nginx_proxy_conf "$dir" "$ng" \
        "    sendfile on;
    proxy_cache_path $dir/cache levels=1:2 keys_zone=hits:10m max_size=256m inactive=60m use_temp_path=off;
" \
        "            proxy_cache hits;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
"
    start_nginx_peer nginx-cache "$ng" wait_ready "http://127.0.0.1:$ng/1k" "$dir"
    local t wl
    for t in "${TARGETS[@]}"; do
        for wl in "${WORKLOADS[@]}"; do
            hit_check "$t" "${W_PATH[$wl]}"
        done
    done
    log "targets: direct (backend, no cache) ${TARGETS[*]}"
    bench_matrix

    # Fulcrum's CPU per hit against nginx's (target: at most half).
    local f n
    SUITE_NOTES=$'\n### CPU per cache hit against nginx proxy_cache\n\n| workload | target | CPU us/req median | nginx-cache CPU us/req median | ratio (target <= 0.50) | per round: min / median / max |\n|---|---|---|---|---|---|\n'
    for wl in "${WORKLOADS[@]}"; do
        n=$RESULTS/$wl.nginx-cache
        [[ -s $n ]] || continue
        for t in fulcrum-io_uring fulcrum-epoll base-io_uring base-epoll; do
            f=$RESULTS/$wl.$t
            [[ -s $f ]] || continue
            SUITE_NOTES+="| ${W_TITLE[$wl]} $(ratio_row "$t" "$f" "$n")"$'\n'
        done
    done
    SUITE_NOTES+=$'\nEvery measured request is a hit (the warm-up fills both caches; both TTLs outlast the runs). nginx proxy_cache keeps hits in files (page cache) and sends them with sendfile; Fulcrum keeps them in memory, one shard per worker. "direct" is one backend without any cache.\n'
}

# ------------------------------------------------------------------ grpc --
# h2load replaces wrk: H2_CLIENTS connections, each with CONNECTIONS / H2_CLIENTS streams in
# flight, so as many calls are outstanding as wrk has connections. The backends are two tonic
# echo servers (examples/grpc_echo.rs, one process, one thread) on the load generator's CPU.

H2_CLIENTS=4

# wait_ready_grpc NAME PID BASE-URL: one gRPC call answered with grpc-status 0 (bounded, 5 s).
wait_ready_grpc() {
    local name=$1 pid=$2 url=$3 i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -s --http2-prior-knowledge --max-time 1 -o /dev/null -D - \
            -H 'content-type: application/grpc' -H 'te: trailers' \
            --data-binary @"$TMP/grpc-body" "$url/echo.Echo/Unary" 2>/dev/null |
            grep -qi "$GRPC_READY"; then
            return 0
        fi
        sleep 0.1
    done
    log "$name: not ready after 5 s ($url)"
    return 1
}

# measure_h2load TARGET WORKLOAD SECONDS [record]: like `measure`, with h2load; p50/p99 come
# from h2load's per-request log.
measure_h2load() {
    local target=$1 wl=$2 secs=$3 record=${4:-}
    local url=${T_URL[$target]}${W_PATH[$wl]} out=$TMP/h2load.out
    local reqlog=$TMP/h2load.reqlog streams=$((CONNECTIONS / H2_CLIENTS))
    ((streams > 0)) || streams=1
    rm -f "$reqlog"
    local request=(-d "$TMP/grpc-body" -H 'content-type: application/grpc' -H 'te: trailers')
    [[ -z ${W_H2LOAD[$wl]+set} ]] || read -ra request <<<"${W_H2LOAD[$wl]}"
    timed_run "$target" "$out" taskset -c "$GEN_CPU" h2load -t1 -c"$H2_CLIENTS" -m"$streams" \
        -D "$secs" "${request[@]}" --log-file="$reqlog" "$url" || return 0
    { printf '### %s %s %s %ss\n' "$target" "$wl" "${record:-warmup}" "$secs"; cat "$out"; } >>"$RAW_LOG"
    [[ -n $record ]] || return 0
    h2load_record "$target" "$wl" "$out" "$reqlog" "$secs"
}

# start_grpc_echo PORT-A PORT-B: the two tonic echo backends (one process) on the load
# generator's CPU; builds examples/grpc_echo.rs first unless --no-build. Needs $TMP/grpc-body.
start_grpc_echo() {
    if ((BUILD)); then
        log "cargo build --release --example grpc_echo ..."
        cargo build --release --example grpc_echo >"$TMP/cargo-build-echo.log" 2>&1 ||
            { tail -n 20 "$TMP/cargo-build-echo.log" >&2; die "cannot build examples/grpc_echo.rs"; }
    fi
    local echo_bin=$RELEASE_DIR/examples/grpc_echo pid
    [[ -x $echo_bin ]] || die "$echo_bin missing (run without --no-build once)"
    taskset -c "$GEN_CPU" "$echo_bin" "127.0.0.1:$1" "127.0.0.1:$2" >"$TMP/echo.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    { wait_ready_grpc backend "$pid" "http://127.0.0.1:$1" &&
        wait_ready_grpc backend "$pid" "http://127.0.0.1:$2"; } ||
        die "grpc_echo backend failed to start: $(tail -n 5 "$TMP/echo.log")"
}

suite_grpc() {
    command -v h2load >/dev/null 2>&1 || die "h2load not found: apt-get install -y nghttp2-client"
    # EchoRequest { message: "hello" } in one gRPC frame (uncompressed, 7-byte message).
    printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$TMP/grpc-body"
    workload unary /echo.Echo/Unary \
        "gRPC unary (12-byte call), h2c, $GRPC_BACKEND backends, $H2_CLIENTS connections x $((CONNECTIONS / H2_CLIENTS)) streams"
    check_ports_free "$BE1_PORT" "$BE2_PORT" "$FULCRUM_URING_PORT" "$FULCRUM_EPOLL_PORT" \
        "$NGINX_PORT" "$HAPROXY_PORT"
    prepare_fulcrum
    local pid
    if [[ $GRPC_BACKEND == nghttpd ]]; then
        # curl shows no HTTP/2 trailers with -D: a 200 has to do for readiness.
        GRPC_READY='^HTTP/2 200'
        command -v nghttpd >/dev/null 2>&1 || die "nghttpd not found: apt-get install -y nghttp2-server"
        mkdir -p "$TMP/htdocs"
        local port
        for port in "$BE1_PORT" "$BE2_PORT"; do
            taskset -c "$GEN_CPU" nghttpd --no-tls --echo-upload --trailer 'grpc-status: 0' \
                -d "$TMP/htdocs" "$port" >"$TMP/nghttpd-$port.log" 2>&1 &
            pid=$!
            PIDS+=("$pid")
            wait_ready_grpc backend "$pid" "http://127.0.0.1:$port" ||
                die "nghttpd failed to start: $(tail -n 5 "$TMP/nghttpd-$port.log")"
        done
    else
        start_grpc_echo "$BE1_PORT" "$BE2_PORT"
    fi
    T_URL[direct]="http://127.0.0.1:$BE1_PORT"
    T_PID[direct]=""
    T_DRIVER[direct]="-"

    # hyperium h2 (the reference engine; native is the default).
    start_fulcrum io_uring "$FULCRUM_URING_PORT" h2c wait_ready_grpc "" "" --http2-engine h2
    start_fulcrum epoll "$FULCRUM_EPOLL_PORT" h2c wait_ready_grpc "" "" --http2-engine h2
    # The same build on its own HTTP/2 engine (fulcrum-h2), both sides of the proxy.
    check_ports_free "$NATIVE_URING_PORT" "$NATIVE_EPOLL_PORT"
    START_AS=native start_fulcrum io_uring "$NATIVE_URING_PORT" h2c wait_ready_grpc "" "" \
        --http2-engine native
    START_AS=native start_fulcrum epoll "$NATIVE_EPOLL_PORT" h2c wait_ready_grpc "" "" \
        --http2-engine native
    start_baseline h2c wait_ready_grpc ""

    local dir=$TMP/nginx-grpc
    write_nginx_grpc_conf "$dir" "$NGINX_PORT" http2 "$BE1_PORT" "$BE2_PORT"
    start_nginx_peer nginx "$NGINX_PORT" wait_ready_grpc "http://127.0.0.1:$NGINX_PORT" "$dir"

    dir=$TMP/haproxy-grpc
    write_haproxy_h2_conf "$dir" "$HAPROXY_PORT" "$BE1_PORT" "$BE2_PORT"
    haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy config check failed"
    start_haproxy_peer haproxy "$HAPROXY_PORT" wait_ready_grpc "http://127.0.0.1:$HAPROXY_PORT" "$dir"

    log "targets: direct ${TARGETS[*]}"
    local wl
    for wl in "${WORKLOADS[@]}"; do
        rounds "$wl" measure_h2load - direct "${TARGETS[@]}"
    done
    SUITE_NOTES=$'\nh2load counts a call as succeeded on HTTP 200 (it cannot read grpc-status); its "failed" count is shown as non-2xx/3xx and its "errored" count as read. CPU us/req is per call.\n'
    grpc_notes
}

# grpc_notes: CPU per call of every balancer against HAProxy's (the native engine's target: at
# most 0.8).
grpc_notes() {
    local h=$RESULTS/unary.haproxy t f
    [[ -s $h ]] || return 0
    SUITE_NOTES+=$'\n### gRPC: CPU per call against HAProxy\n\n| target | CPU us/call median | haproxy CPU us/call median | ratio (native target <= 0.80) | per round: min / median / max |\n|---|---|---|---|---|\n'
    for t in "${TARGETS[@]}"; do
        f=$RESULTS/unary.$t
        [[ $t != haproxy && -s $f ]] || continue
        SUITE_NOTES+="$(ratio_row "$t" "$f" "$h")"$'\n'
    done
}

# ------------------------------------------------------------------- tls --
# `./bench.sh tls`: TLS termination, Fulcrum against nginx and HAProxy. One ECDSA P-256
# certificate, made with openssl in $TMP, serves all of them, and they are configured alike:
# TLS 1.2 and 1.3 only; rustls's default cipher suites (aws-lc-rs provider) in rustls's order,
# the client's preference honoured (rustls's default; nginx `ssl_prefer_server_ciphers off`,
# HAProxy `prefer-client-ciphers`); groups X25519, P-256, P-384; session tickets on (two per
# TLS 1.3 handshake, each server's default) and a session cache; ALPN h2 and http/1.1 (nginx
# 1.22 predates `http2 on`: `listen ... ssl http2` is the same thing). Workloads:
#   100b, 16k  keep-alive HTTPS GETs (wrk over TLS; wrk sends no ALPN: HTTP/1.1) through each
#              balancer to the nginx backends
#   handshake  a full handshake for every GET: `openssl s_time -new` (a fresh SSL object per
#              connection that offers no session, so never a resumption) in S_TIME_CLIENTS
#              processes on the load CPU, each connecting, sending "GET /100b HTTP/1.0" and
#              reading to the server's close; CPU us/req is the balancer's CPU per connection
#   grpc       gRPC unary over TLS (h2load, ALPN h2) to two tonic echo backends (h2c), the
#              grpc suite's calls with TLS in front
# Fulcrum runs its TLS listener (its cleartext listener is on an unused ephemeral port).

S_TIME_CLIENTS=4
# rustls 0.23's default suites with the aws-lc-rs provider, in its order, in OpenSSL's names.
TLS13_SUITES=TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256
TLS12_CIPHERS=ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305
TLS_GROUPS=X25519:P-256:P-384
TLS_CERT=""
TLS_KEY=""
TLS_PEM="" # certificate and key in one file (HAProxy's `crt`)

# make_tls_cert: a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1 in $TMP/tls;
# every curl of this run trusts it (CURL_CA_BUNDLE).
make_tls_cert() {
    local dir=$TMP/tls
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >"$dir/openssl.log" 2>&1 ||
        die "openssl could not make the certificate: $(tail -n 3 "$dir/openssl.log")"
    TLS_CERT=$dir/cert.pem
    TLS_KEY=$dir/key.pem
    TLS_PEM=$dir/haproxy.pem
    cat "$TLS_CERT" "$TLS_KEY" >"$TLS_PEM"
    export CURL_CA_BUNDLE=$TLS_CERT
}

# start_fulcrum_tls NAME BIN DRIVER PORT SCHEME BE-A BE-B READY-FN READY-PATH [FLAGS...]:
# Fulcrum BIN (1 worker, access log off, and FLAGS) on CPU 0 with its TLS listener on PORT, in
# front of the backends on ports BE-A and BE-B spoken to as SCHEME (http or h2c); a target once
# READY-FN accepts https://127.0.0.1:PORT/READY-PATH.
start_fulcrum_tls() {
    local name=$1 bin=$2 driver=$3 port=$4 scheme=$5 be_a=$6 be_b=$7 ready=$8 path=$9
    shift 9
    [[ -n $FULCRUM_OK && -x $bin ]] || return 0
    printf '%s' "$FULCRUM_BENCH_TOML" >"$TMP/$name.toml"
    start_fulcrum_process "$name" "$port" "$ready" "https://127.0.0.1:$port$path" \
        "$bin" --config "$TMP/$name.toml" --listen 127.0.0.1:0 \
        --tls-listen "127.0.0.1:$port" --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY" \
        --backend "$scheme://127.0.0.1:$be_a" --backend "$scheme://127.0.0.1:$be_b" \
        --workers 1 --io-driver "$driver" --access-log off "$@"
    [[ -z $STARTED ]] || T_URL[$name]="https://127.0.0.1:$port"
}

# start_tls_peer NAME PORT READY-FN READY-PATH LOG CMD...: CMD (nginx or HAProxy, serving TLS on
# PORT) on CPU 0; a target once READY-FN accepts https://127.0.0.1:PORT/READY-PATH.
start_tls_peer() {
    local name=$1 port=$2 ready=$3 path=$4 out=$5
    shift 5
    start_peer "$name" "$port" "$ready" "https://127.0.0.1:$port$path" "$out" "$out" "$@"
    if [[ -n $STARTED ]]; then
        T_URL[$name]="https://127.0.0.1:$port"
    else
        kill -TERM "$STARTED_PID" 2>/dev/null || true
    fi
}

# nginx_tls_lines: the TLS directives of the nginx configs (http block).
nginx_tls_lines() {
    cat <<EOF
    ssl_certificate $TLS_CERT;
    ssl_certificate_key $TLS_KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers $TLS12_CIPHERS;
    ssl_conf_command Ciphersuites $TLS13_SUITES;
    ssl_prefer_server_ciphers off;
    ssl_ecdh_curve $TLS_GROUPS;
    ssl_session_cache shared:TLS:10m;
    ssl_session_tickets on;
EOF
}

# write_haproxy_tls_conf FILE PORT BE-A BE-B [SERVER-OPTS]: HAProxy (1 thread) terminating TLS
# on PORT, keep-alive on both sides, round robin over the backends on BE-A and BE-B.
write_haproxy_tls_conf() {
    write_haproxy_conf "$1" http "option http-keep-alive;http-reuse always" \
        "timeout http-keep-alive 60s" "$2" \
        " ssl crt $TLS_PEM alpn h2,http/1.1 ssl-min-ver TLSv1.2 ciphers $TLS12_CIPHERS ciphersuites $TLS13_SUITES curves $TLS_GROUPS prefer-client-ciphers" \
        "$3" "$4" "${5:+ $5}"
    haproxy -c -q -f "$1" || die "haproxy config check failed ($1)"
}

# stime_clients DIR SECS s_time HOST:PORT PAGE: S_TIME_CLIENTS `openssl s_time -new` processes
# on the load CPU for SECS seconds, the output of each in DIR.N; fails when one fails. Run by
# timed_run in a background subshell (whose TERM trap ends the clients).
stime_clients() {
    local dir=$1 secs=$2 hostport=$4 page=$5 i rc=0 pids=()
    trap 'kill -TERM "${pids[@]}" 2>/dev/null; exit 143' TERM
    for ((i = 0; i < S_TIME_CLIENTS; i++)); do
        taskset -c "$GEN_CPU" openssl s_time -connect "$hostport" -new -time "$secs" \
            -www "$page" >"$dir.$i" 2>&1 &
        pids+=("$!")
    done
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            rc=1
            grep -v '^[*]' "$dir.$i" | tail -n 5
        fi
    done
    return "$rc"
}

# measure_stime TARGET WORKLOAD SECONDS [record]: like `measure`, with stime_clients: req/s is
# connections (each one full handshake and one GET) per second, CPU us/req the balancer's CPU
# per connection; s_time gives no latencies.
measure_stime() {
    local target=$1 wl=$2 secs=$3 record=${4:-}
    local url=${T_URL[$target]} pid=${T_PID[$target]} out=$TMP/stime.out f
    rm -f "$TMP"/stime.[0-9]*
    timed_run "$target" "$out" stime_clients "$TMP/stime" "$secs" s_time "${url#https://}" \
        "${W_PATH[$wl]}" || return 0
    {
        printf '### %s %s %s %ss\n' "$target" "$wl" "${record:-warmup}" "$secs"
        for f in "$TMP"/stime.[0-9]*; do grep -v '^[*]' "$f"; done
    } >>"$RAW_LOG"
    [[ -n $record ]] || return 0
    local conns bytes
    read -r conns bytes < <(awk '/connections in [0-9]+ real seconds/ { n += $1; b += $1 * $7 }
        END { printf "%d %.0f\n", n, (n ? b / n : 0) }' "$TMP"/stime.[0-9]*)
    # A 100 B body and its head cannot arrive in fewer bytes: anything less is an error page or
    # nothing at all.
    if ((bytes < 100)); then
        T_NOTE[$target,$wl]="short answers ($bytes bytes per connection)"
    fi
    awk -v ns=$((T1 - T0)) -v haspid="${pid:+1}" -v n="$conns" -v secs="$secs" 'BEGIN {
            cpu = (haspid && n > 0) ? sprintf("%.2f", ns / 1000 / n) : "-"
            printf "%.0f - - %s 0 0 0 0 0 %d\n", n / secs, cpu, n
        }' >>"$RESULTS/$wl.$target"
    log "  $target/$wl: $(tail -n 1 "$RESULTS/$wl.$target")"
}

# probe_http10 TARGET WORKLOAD: the request s_time sends, on a new TLS connection, must be
# answered 2xx. Warns otherwise.
probe_http10() {
    local target=$1 wl=$2 status
    status=$(printf 'GET %s HTTP/1.0\r\n\r\n' "${W_PATH[$wl]}" |
        timeout 5 openssl s_client -quiet -connect "${T_URL[$target]#https://}" 2>/dev/null |
        head -n 1 | tr -d '\r') || true
    if [[ ! $status =~ ^HTTP/1\.[01]\ 2[0-9][0-9] ]]; then
        T_NOTE[$target,$wl]="HTTP/1.0 probe failed"
        log "warning: $target/$wl: HTTP/1.0 over a new TLS connection gave '${status:-nothing}'"
    fi
}

# s_client_for SECS ARGS...: openssl s_client ARGS with its standard input open for SECS seconds
# (long enough to read the session tickets a server sends after the handshake); prints what
# s_client printed on standard output.
s_client_for() {
    local secs=$1
    shift
    sleep "$secs" | timeout 5 openssl s_client "$@" 2>/dev/null | tr -d '\000' || true
}

# tls_check TARGET: one markdown row of what openssl s_client negotiates with the target: TLS 1.3
# (suite, group, ALPN with h2 and http/1.1 offered), the session tickets it sends after a full
# handshake and whether one resumes; the TLS 1.2 suite and whether its ticket resumes; whether
# TLS 1.1 is refused.
tls_check() {
    local hostport=${T_URL[$1]#https://} v13 tickets r13 v12 r12 v11 sess=$TMP/tls/$1.session out
    out=$(s_client_for 0.3 -connect "$hostport" -alpn h2,http/1.1 -sess_out "$sess.13")
    v13=$(awk '/^New, TLS/ { p = $2; c = $NF; sub(/,$/, "", p) }
        /^Server Temp Key:/ { g = $4; sub(/,$/, "", g) } /^ALPN protocol:/ { a = $3 }
        END { printf "%s %s %s, ALPN %s", p, c, g, (a ? a : "none") }' <<<"$out")
    tickets=$(grep -c 'New Session Ticket arrived' <<<"$out" || true)
    r13=$(s_client_for 0.3 -connect "$hostport" -sess_in "$sess.13" |
        awk '/^Reused,/ { print "yes"; exit } /^New,/ { print "no"; exit }')
    v12=$(s_client_for 0 -tls1_2 -connect "$hostport" -sess_out "$sess.12" |
        awk '/^New, TLS/ { print $NF; exit }')
    r12=$(s_client_for 0 -tls1_2 -connect "$hostport" -sess_in "$sess.12" |
        awk '/^Reused,/ { print "yes"; exit } /^New,/ { print "no"; exit }')
    # SECLEVEL=0: the client itself would refuse TLS 1.1 at OpenSSL 3.0's default level.
    if timeout 5 openssl s_client -tls1_1 -cipher 'DEFAULT@SECLEVEL=0' -connect "$hostport" \
        </dev/null >/dev/null 2>&1; then
        v11="ACCEPTED"
    else
        v11="refused"
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${v13:-?}" "${tickets:-?}" "${r13:-?}" \
        "${v12:-?}" "${r12:-?}" "$v11"
}

# tls_ratios: for each workload, the median CPU per request of every Fulcrum target against the
# peers' (nginx*, haproxy*) as markdown.
tls_ratios() {
    local wl t p f cpu best_n best_h ts
    printf '\n### Fulcrum CPU per request against the peers (medians)\n\n'
    printf '| workload | target | CPU us/req | nginx | HAProxy | vs nginx | vs HAProxy | below both |\n'
    printf '|---|---|---|---|---|---|---|---|\n'
    for wl in "${WORKLOADS[@]}"; do
        mapfile -t ts < <(targets_of "$wl")
        best_n="" best_h=""
        for p in "${ts[@]}"; do
            f=$RESULTS/$wl.$p
            [[ -s $f ]] || continue
            case $p in
                nginx*) best_n=$(median_of "$f" 4) ;;
                haproxy*) best_h=$(median_of "$f" 4) ;;
            esac
        done
        for t in "${ts[@]}"; do
            [[ $t == fulcrum-* || $t == native-* || $t == base-* ]] || continue
            f=$RESULTS/$wl.$t
            [[ -s $f ]] || continue
            cpu=$(median_of "$f" 4)
            awk -v w="$wl" -v t="$t" -v c="$cpu" -v n="${best_n:-0}" -v h="${best_h:-0}" 'BEGIN {
                rn = n > 0 ? sprintf("%.2f", c / n) : "-"
                rh = h > 0 ? sprintf("%.2f", c / h) : "-"
                ok = (n > 0 && h > 0) ? ((c < n && c < h) ? "yes" : "**no**") : "-"
                printf "| %s | %s | %.2f | %.2f | %.2f | %s | %s | %s |\n", w, t, c, n, h, rn, rh, ok
            }'
        done
    done
}

# tls_capacity: for the handshake workload, the full handshakes (each with its GET) one core of
# each balancer can do: 1e6 / its median CPU us per connection.
tls_capacity() {
    local t f cpu ts
    printf '\n### Full handshakes per second on one core (1e6 / median CPU us per connection)\n\n'
    printf '| target | CPU us per connection (median) | handshakes per CPU-second |\n|---|---|---|\n'
    mapfile -t ts < <(targets_of handshake)
    for t in "${ts[@]}"; do
        f=$RESULTS/handshake.$t
        [[ -s $f ]] || continue
        cpu=$(median_of "$f" 4)
        awk -v t="$t" -v c="$cpu" 'BEGIN { printf "| %s | %.1f | %.0f |\n", t, c, (c > 0 ? 1e6 / c : 0) }'
    done
}

suite_tls() {
    local tool
    for tool in openssl h2load; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found: apt-get install -y openssl nghttp2-client"
    done
    # EchoRequest { message: "hello" } in one gRPC frame (uncompressed, 7-byte message).
    printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$TMP/grpc-body"
    local streams=$((CONNECTIONS / H2_CLIENTS))
    ((streams > 0)) || streams=1
    workload 100b /100b "HTTPS GET 100 B body, keep-alive (wrk -c$CONNECTIONS, HTTP/1.1)"
    workload 16k /16k "HTTPS GET 16 KiB body, keep-alive (wrk -c$CONNECTIONS, HTTP/1.1)"
    workload handshake /100b \
        "Full TLS handshake + GET 100 B per connection (openssl s_time -new, $S_TIME_CLIENTS clients); req/s = handshakes/s"
    workload grpc /echo.Echo/Unary \
        "gRPC unary over TLS (12-byte call, h2load, ALPN h2), $H2_CLIENTS connections x $streams streams"
    W_MEASURE[handshake]=measure_stime
    W_PROBE[handshake]=probe_http10
    W_MEASURE[grpc]=measure_h2load
    W_PROBE[grpc]=-

    local p=$((PORT_BASE + 40)) g=$((PORT_BASE + 60))
    local gbe1=$((PORT_BASE + 3)) gbe2=$((PORT_BASE + 4))
    check_ports_free "$BE1_PORT" "$BE2_PORT" "$gbe1" "$gbe2" "$p" $((p + 1)) $((p + 2)) \
        $((p + 3)) "$g" $((g + 1)) $((g + 2)) $((g + 3)) $((g + 6)) $((g + 7))
    [[ -z $FULCRUM_BASELINE_BIN ]] || check_ports_free $((p + 4)) $((p + 5)) $((g + 4)) $((g + 5))
    make_tls_cert
    prepare_fulcrum
    start_backends
    start_grpc_echo "$gbe1" "$gbe2"
    T_URL[direct-grpc]="http://127.0.0.1:$gbe1"
    T_PID[direct-grpc]=""
    T_DRIVER[direct-grpc]="-"

    # HTTP/1.1 over TLS, and the handshakes: to the nginx backends.
    local d base=$FULCRUM_BASELINE_BIN
    start_fulcrum_tls fulcrum-io_uring "$FULCRUM_BIN" io_uring "$p" http "$BE1_PORT" "$BE2_PORT" wait_ready /100b
    start_fulcrum_tls fulcrum-epoll "$FULCRUM_BIN" epoll $((p + 1)) http "$BE1_PORT" "$BE2_PORT" wait_ready /100b
    if [[ -n $base ]]; then
        start_fulcrum_tls base-io_uring "$base" io_uring $((p + 4)) http "$BE1_PORT" "$BE2_PORT" wait_ready /100b
        start_fulcrum_tls base-epoll "$base" epoll $((p + 5)) http "$BE1_PORT" "$BE2_PORT" wait_ready /100b
    fi
    d=$TMP/nginx-tls
    write_nginx_proxy_conf "$d" $((p + 2)) "$(nginx_tls_lines)"$'\n' "" "ssl http2"
    start_tls_peer nginx $((p + 2)) wait_ready /100b "$d/stdout.log" \
        nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
    d=$TMP/haproxy-tls
    mkdir -p "$d"
    write_haproxy_tls_conf "$d/haproxy.cfg" $((p + 3)) "$BE1_PORT" "$BE2_PORT"
    start_tls_peer haproxy $((p + 3)) wait_ready /100b "$d/stdout.log" haproxy -db -f "$d/haproxy.cfg"
    local http_targets=("${TARGETS[@]}")

    # gRPC over TLS: to the echo backends.
    # fulcrum-*-grpc on hyperium h2 (the reference engine), native-*-grpc on fulcrum-h2.
    start_fulcrum_tls fulcrum-io_uring-grpc "$FULCRUM_BIN" io_uring "$g" h2c "$gbe1" "$gbe2" \
        wait_ready_grpc "" --http2-engine h2
    start_fulcrum_tls fulcrum-epoll-grpc "$FULCRUM_BIN" epoll $((g + 1)) h2c "$gbe1" "$gbe2" \
        wait_ready_grpc "" --http2-engine h2
    start_fulcrum_tls native-io_uring-grpc "$FULCRUM_BIN" io_uring $((g + 6)) h2c "$gbe1" "$gbe2" \
        wait_ready_grpc "" --http2-engine native
    start_fulcrum_tls native-epoll-grpc "$FULCRUM_BIN" epoll $((g + 7)) h2c "$gbe1" "$gbe2" \
        wait_ready_grpc "" --http2-engine native
    if [[ -n $base ]]; then
        start_fulcrum_tls base-io_uring-grpc "$base" io_uring $((g + 4)) h2c "$gbe1" "$gbe2" wait_ready_grpc ""
        start_fulcrum_tls base-epoll-grpc "$base" epoll $((g + 5)) h2c "$gbe1" "$gbe2" wait_ready_grpc ""
    fi
    d=$TMP/nginx-tls-grpc
    write_nginx_grpc_conf "$d" $((g + 2)) "ssl http2" "$gbe1" "$gbe2" "$(nginx_tls_lines)"
    start_tls_peer nginx-grpc $((g + 2)) wait_ready_grpc "" "$d/stdout.log" \
        nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
    d=$TMP/haproxy-tls-grpc
    mkdir -p "$d"
    write_haproxy_tls_conf "$d/haproxy.cfg" $((g + 3)) "$gbe1" "$gbe2" "proto h2"
    start_tls_peer haproxy-grpc $((g + 3)) wait_ready_grpc "" "$d/stdout.log" haproxy -db -f "$d/haproxy.cfg"
    local t grpc_targets=()
    for t in "${TARGETS[@]}"; do
        [[ $t == *-grpc ]] && grpc_targets+=("$t")
    done

    W_TARGETS[100b]="direct ${http_targets[*]}"
    W_TARGETS[16k]="direct ${http_targets[*]}"
    W_TARGETS[handshake]="${http_targets[*]}"
    W_TARGETS[grpc]="direct-grpc ${grpc_targets[*]}"
    log "targets: direct direct-grpc ${TARGETS[*]}"
    SUITE_NOTES=$'\n### What each target negotiates (openssl s_client)\n\n| target | TLS 1.3 | tickets sent | TLS 1.3 resumes | TLS 1.2 suite | TLS 1.2 resumes | TLS 1.1 |\n|---|---|---|---|---|---|---|\n'
    for t in "${TARGETS[@]}"; do
        SUITE_NOTES+=$(tls_check "$t")$'\n'
    done
    bench_matrix
    SUITE_NOTES+=$(tls_ratios)$'\n'
    SUITE_NOTES+=$(tls_capacity)$'\n'
    SUITE_NOTES+=$'\n'"Certificate: ECDSA P-256, self-signed (openssl req -x509). Every balancer: TLS 1.2 and 1.3, suites $TLS13_SUITES and $TLS12_CIPHERS (the client's preference honoured), groups $TLS_GROUPS, session tickets on, ALPN h2 and http/1.1. Fulcrum: rustls with the $(awk -F'"' '/^default = /{ print $2; exit }' crates/tls/Cargo.toml 2>/dev/null || echo '?') provider. Clients: $(openssl version | awk '{ print $1 " " $2 }') (wrk, s_time, h2load). direct = the backend without TLS (the generator's ceiling). handshake: every connection is a full handshake (s_time -new offers no session); its CPU us/req is per connection, so 1e6 / CPU us/req is the handshakes per second one core of the balancer can do.${FULCRUM_BASELINE_BIN:+ base-* = $FULCRUM_BASELINE_BIN.}"$'\n'
}

# -------------------------------------------------------------------- ws --
# examples/ws_load.rs replaces wrk: WS_TUNNELS tunnels, each sending a WS_MESSAGE-byte text
# message and waiting for its echo, over and over. A "request" is one message and its echo, so
# CPU us/req is the balancer's CPU per echoed message (one frame each way). The backend is
# examples/ws_echo.rs (one process, a thread per connection) on the load generator's CPU.

WS_TUNNELS=50
WS_MESSAGE=32
WS_LOAD=""

# wait_ready_ws NAME PID URL: one tunnel and one echo through URL (bounded, 5 s).
wait_ready_ws() {
    local name=$1 pid=$2 url=${3/http:/ws:} i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        "$WS_LOAD" --check "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    log "$name: not ready after 5 s ($url)"
    return 1
}

# measure_ws TARGET WORKLOAD SECONDS [record]: like `measure`, with ws_load.
measure_ws() {
    local target=$1 wl=$2 secs=$3 record=${4:-}
    local url=${T_URL[$target]/http:/ws:}${W_PATH[$wl]} out=$TMP/ws_load.out
    timed_run "$target" "$out" taskset -c "$GEN_CPU" "$WS_LOAD" "$url" "$WS_TUNNELS" "$secs" \
        "$WS_MESSAGE" || return 0
    record_bench "$target" "$wl" "$secs" "$record" "$out" ws_load
}

suite_ws() {
    workload ws32 / "WebSocket: $WS_MESSAGE-byte text messages echoed on $WS_TUNNELS tunnels, one in flight per tunnel (req/s = messages/s)"
    check_ports_free "$BE1_PORT" "$BE2_PORT" "$FULCRUM_URING_PORT" "$FULCRUM_EPOLL_PORT" \
        "$NGINX_PORT" "$HAPROXY_PORT" "$RELAY_PORT"
    prepare_fulcrum
    if ((BUILD)); then
        log "cargo build --release --example ws_echo --example ws_load ..."
        cargo build --release --example ws_echo --example ws_load >"$TMP/cargo-build-ws.log" 2>&1 ||
            { tail -n 20 "$TMP/cargo-build-ws.log" >&2; die "cannot build examples/ws_echo.rs and ws_load.rs"; }
    fi
    WS_LOAD=$RELEASE_DIR/examples/ws_load
    local echo_bin=$RELEASE_DIR/examples/ws_echo pid
    [[ -x $echo_bin && -x $WS_LOAD ]] || die "$echo_bin or $WS_LOAD missing (run without --no-build once)"
    taskset -c "$GEN_CPU" "$echo_bin" "127.0.0.1:$BE1_PORT" "127.0.0.1:$BE2_PORT" >"$TMP/ws-echo.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    { wait_ready_ws backend "$pid" "ws://127.0.0.1:$BE1_PORT/" &&
        wait_ready_ws backend "$pid" "ws://127.0.0.1:$BE2_PORT/"; } ||
        die "ws_echo backend failed to start: $(tail -n 5 "$TMP/ws-echo.log")"
    T_URL[direct]="http://127.0.0.1:$BE1_PORT"
    T_PID[direct]=""
    T_DRIVER[direct]="-"

    start_fulcrum io_uring "$FULCRUM_URING_PORT" http wait_ready_ws / ""
    start_fulcrum epoll "$FULCRUM_EPOLL_PORT" http wait_ready_ws / ""
    start_baseline http wait_ready_ws /

    local dir=$TMP/nginx-ws
    write_nginx_proxy_conf "$dir" "$NGINX_PORT" \
        "    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
" \
        "            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
"
    # The shared template clears Connection for keep-alive; the upgrade needs its own value.
    sed -i '/proxy_set_header Connection "";/d' "$dir/nginx.conf"
    start_nginx_peer nginx "$NGINX_PORT" wait_ready_ws "ws://127.0.0.1:$NGINX_PORT/" "$dir"

    dir=$TMP/haproxy-ws
    mkdir -p "$dir"
    write_haproxy_conf "$dir/haproxy.cfg" http "option http-keep-alive" "timeout tunnel 1h" \
        "$HAPROXY_PORT" "" "$BE1_PORT" "$BE2_PORT" ""
    haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy config check failed"
    start_haproxy_peer haproxy "$HAPROXY_PORT" wait_ready_ws "ws://127.0.0.1:$HAPROXY_PORT/" "$dir"
    # A yardstick: an L4 relay copies the same frames and parses nothing.
    start_relay wait_ready_ws "ws://127.0.0.1:$RELAY_PORT/"

    log "targets: direct ${TARGETS[*]}"
    local wl t
    for wl in "${WORKLOADS[@]}"; do
        rounds "$wl" measure_ws - direct "${TARGETS[@]}"
    done
    # Fulcrum's CPU per message against each peer's (target: below both).
    local f cpu ncpu=0 hcpu=0 rcpu=0
    [[ -s $RESULTS/ws32.nginx ]] && ncpu=$(median_of "$RESULTS/ws32.nginx" 4)
    [[ -s $RESULTS/ws32.haproxy ]] && hcpu=$(median_of "$RESULTS/ws32.haproxy" 4)
    [[ -s $RESULTS/ws32.relay ]] && rcpu=$(median_of "$RESULTS/ws32.relay" 4)
    SUITE_NOTES=$'\n### CPU per echoed message against nginx and HAProxy (target: below both)\n\n| target | CPU us/msg median | nginx | HAProxy | ratio to nginx | per round | ratio to HAProxy | per round | ratio to the relay | per round |\n|---|---|---|---|---|---|---|---|---|---|\n'
    for t in fulcrum-io_uring fulcrum-epoll base-io_uring base-epoll nginx haproxy; do
        f=$RESULTS/ws32.$t
        [[ -s $f ]] || continue
        cpu=$(median_of "$f" 4)
        SUITE_NOTES+=$(awk -v t="$t" -v c="$cpu" -v n="$ncpu" -v h="$hcpu" -v r="$rcpu" \
            -v rn="$(round_ratios "$f" "$RESULTS/ws32.nginx")" \
            -v rh="$(round_ratios "$f" "$RESULTS/ws32.haproxy")" \
            -v rr="$(round_ratios "$f" "$RESULTS/ws32.relay")" \
            'BEGIN { printf "| %s | %.2f | %.2f | %.2f | %.2f | %s | %.2f | %s | %.2f | %s |", t, c, n, h, (n > 0 ? c / n : 0), rn, (h > 0 ? c / h : 0), rh, (r > 0 ? c / r : 0), rr }')
        SUITE_NOTES+=$'\n'
    done
    SUITE_NOTES+=$'\nA request is one message and its echo: one frame each way through the tunnel. Errors are the load generator\'s failed connects, reads and writes. "direct" is the load generator against one echo backend. "relay" is HAProxy in `mode tcp`: it copies the same frames without parsing anything.'"${FULCRUM_BASELINE_BIN:+ base-* = $FULCRUM_BASELINE_BIN.}"$'\n'
}

# ------------------------------------------------------------------ soak --
# `./bench.sh soak [--duration 3m] [--flood N]`: Fulcrum (io_uring, 1 worker) alone in front of
# the nginx backends. Phases: idle (baseline), steady wrk load for --duration (default 3 min;
# GET 3 B, GET 16 KiB and POST 1 KiB in turn), idle, a connection flood (3 rounds of --flood
# concurrent keep-alive connections for 10 s each, all opened at once and closed at the end),
# then idle again. A sampler writes Fulcrum's VmRSS (/proc/PID/status) and open fds once a
# second, with the phase, to target/bench/soak-rss-<timestamp>.csv; the report compares the
# phases. Allocator settings come from the environment (MALLOC_MMAP_THRESHOLD_, MALLOC_ARENA_MAX,
# or LD_PRELOAD of another malloc for every process started); the report names any that are set.

SOAK_IDLE_SECS=10
SOAK_FLOOD_ROUNDS=3
SOAK_FLOOD_SECS=10

# vm_rss_kib PID: resident set size in KiB, or nothing when the process is gone.
vm_rss_kib() {
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

# soak_sampler PID CSV PHASE-FILE: one "seconds,phase,rss_kib,fds" line a second while PID lives.
soak_sampler() {
    local pid=$1 csv=$2 phase_file=$3 start=$SECONDS rss fds
    echo "seconds,phase,rss_kib,fds" >"$csv"
    while rss=$(vm_rss_kib "$pid") && [[ -n $rss ]]; do
        fds=(/proc/"$pid"/fd/*)
        echo "$((SECONDS - start)),$(<"$phase_file"),$rss,${#fds[@]}" >>"$csv"
        sleep 1
    done
}

# soak_phase NAME: what the following samples are labelled with.
soak_phase() {
    echo "$1" >"$TMP/soak-phase"
    log "soak: phase $1 ($(date -u +%H:%M:%S))"
}

# soak_wrk SECS CONNS OUT: one wrk run against Fulcrum (no CPU reading; dies if wrk fails).
soak_wrk() {
    timed_run direct "$3" taskset -c "$GEN_CPU" wrk -t1 -c"$2" -d"$1s" --timeout 10s \
        -s "$TMP/soak.lua" "${T_URL[fulcrum-io_uring]}/small"
    cat "$3" >>"$RAW_LOG"
}

# soak_stat CSV COLUMN PHASE [FIRST|LAST SECS]: "min mean max samples" of COLUMN (3 = RSS KiB,
# 4 = open fds) over the samples of PHASE, optionally only its first or last SECS seconds.
soak_stat() {
    awk -F, -v col="$2" -v ph="$3" -v which="${4:-}" -v secs="${5:-0}" '
        BEGIN { n = 0; k = 0 }
        NR > 1 && $2 == ph { t[n] = $1 + 0; v[n] = $col + 0; n++ }
        END {
            if (n == 0) { print "- - - 0"; exit }
            lo = t[0]; hi = t[n - 1]
            if (which == "FIRST") hi = t[0] + secs - 1
            if (which == "LAST") lo = t[n - 1] - secs + 1
            for (i = 0; i < n; i++) if (t[i] >= lo && t[i] <= hi) {
                if (k == 0 || v[i] < mn) mn = v[i]
                if (k == 0 || v[i] > mx) mx = v[i]
                s += v[i]; k++
            }
            if (k == 0) { print "- - - 0"; exit }
            printf "%d %.0f %d %d\n", mn, s / k, mx, k
        }' "$1"
}

suite_soak() {
    ((DURATION_SET)) || DURATION=180
    local limit flood secs
    limit=$(ulimit -n)
    flood=$FLOOD
    ((flood <= limit / 3)) || { flood=$((limit / 3)); log "soak: --flood capped to $flood (ulimit -n $limit)"; }
    check_ports_free "$BE1_PORT" "$BE2_PORT" "$FULCRUM_URING_PORT"
    prepare_fulcrum
    [[ -n $FULCRUM_OK ]] || die "the soak needs Fulcrum (see above)"
    start_backends
    start_fulcrum io_uring "$FULCRUM_URING_PORT" http wait_ready /small ""
    [[ -n ${T_PID[fulcrum-io_uring]:-} ]] || die "Fulcrum did not start"
    local pid=${T_PID[fulcrum-io_uring]} body
    body=$(head -c 1024 /dev/zero | tr '\0' 'x')
    cat >"$TMP/soak.lua" <<LUA
local paths = { "/small", "/16k", "/post" }
local n = 0
request = function()
  n = n + 1
  local p = paths[n % 3 + 1]
  if p == "/post" then return wrk.format("POST", p, nil, "$body") end
  return wrk.format("GET", p)
end
LUA
    CSV=$ROOT/target/bench/soak-rss-$STAMP.csv
    soak_phase start
    soak_sampler "$pid" "$CSV" "$TMP/soak-phase" &
    PIDS+=("$!")

    soak_phase baseline
    sleep "$SOAK_IDLE_SECS"
    soak_phase steady
    soak_wrk "$DURATION" "$CONNECTIONS" "$TMP/soak-steady.out"
    soak_phase after-steady
    sleep "$SOAK_IDLE_SECS"
    local r
    for ((r = 1; r <= SOAK_FLOOD_ROUNDS; r++)); do
        soak_phase flood
        soak_wrk "$SOAK_FLOOD_SECS" "$flood" "$TMP/soak-flood-$r.out"
    done
    soak_phase after-flood
    sleep $((SOAK_IDLE_SECS * 3))
    kill -0 "$pid" 2>/dev/null || die "Fulcrum exited during the soak"

    # First and last minute of the steady phase (its halves when it is shorter than 2 minutes).
    secs=$((DURATION >= 120 ? 60 : DURATION / 2))
    ((secs > 0)) || secs=1
    local base first last steady after_steady peak after_flood settled
    base=$(soak_stat "$CSV" 3 baseline)
    steady=$(soak_stat "$CSV" 3 steady)
    first=$(soak_stat "$CSV" 3 steady FIRST "$secs")
    last=$(soak_stat "$CSV" 3 steady LAST "$secs")
    after_steady=$(soak_stat "$CSV" 3 after-steady LAST 3)
    peak=$(soak_stat "$CSV" 3 flood)
    after_flood=$(soak_stat "$CSV" 3 after-flood FIRST 5)
    settled=$(soak_stat "$CSV" 3 after-flood LAST 5)
    local fds_base fds_peak fds_settled malloc_env
    fds_base=$(soak_stat "$CSV" 4 baseline | awk '{ print $3 }')
    fds_peak=$(soak_stat "$CSV" 4 flood | awk '{ print $3 }')
    fds_settled=$(soak_stat "$CSV" 4 after-flood LAST 5 | awk '{ print $3 }')
    malloc_env=$(env | grep -E '^(_RJEM_MALLOC_CONF=|LD_PRELOAD=)' | paste -sd' ' - || true)
    local reqs errs
    reqs=$(awk '/requests in/ { print $1 }' "$TMP/soak-steady.out")
    errs=$(awk '/Socket errors|Non-2xx/ { sub(/^ +/, ""); printf "%s%s", sep, $0; sep = "; " }' \
        "$TMP/soak-steady.out" "$TMP"/soak-flood-*.out)
    row() { read -r mn mean mx k <<<"$2"; printf '| %s | %s | %s | %s | %s |\n' "$1" "$mn" "$mean" "$mx" "$k"; }
    local mn mean mx k
    SUITE_NOTES=$'\n### Fulcrum RSS (KiB) by phase\n\n| phase | min | mean | max | samples |\n|---|---|---|---|---|\n'
    SUITE_NOTES+=$(
        row "baseline (idle after start, ${SOAK_IDLE_SECS} s)" "$base"
        row "steady load, all ${DURATION} s" "$steady"
        row "steady load, first ${secs} s" "$first"
        row "steady load, last ${secs} s" "$last"
        row "idle after the load (last 3 s)" "$after_steady"
        row "flood: ${SOAK_FLOOD_ROUNDS} x ${flood} connections, ${SOAK_FLOOD_SECS} s each" "$peak"
        row "after the flood, first 5 s" "$after_flood"
        row "after the flood, last 5 s (of $((SOAK_IDLE_SECS * 3)) s)" "$settled"
    )
    local b l f s
    b=$(awk '{ print $2 }' <<<"$base")
    f=$(awk '{ print $2 }' <<<"$first")
    l=$(awk '{ print $2 }' <<<"$last")
    s=$(awk '{ print $2 }' <<<"$settled")
    SUITE_NOTES+=$'\n\n'
    SUITE_NOTES+=$(awk -v b="$b" -v f="$f" -v l="$l" -v s="$s" -v w="$secs" -v p="$(awk '{ print $3 }' <<<"$peak")" 'BEGIN {
        printf "- steady load, mean of the last %d s vs the first %d s: %+.1f%% (%+d KiB)\n", w, w, (f > 0 ? (l / f - 1) * 100 : 0), l - f
        printf "- flood peak vs baseline: %+d KiB; settled after the flood vs baseline: %+d KiB (%+.1f%%)\n", p - b, s - b, (b > 0 ? (s / b - 1) * 100 : 0)
    }')
    SUITE_NOTES+=$'\n'
    SUITE_NOTES+="- allocator: jemalloc compiled into the binary (settings: .cargo/config.toml)${malloc_env:+; environment: $malloc_env}"
    SUITE_NOTES+=$'\n'
    SUITE_NOTES+="- open fds: baseline ${fds_base:-?}, flood peak ${fds_peak:-?}, after the flood ${fds_settled:-?}"
    SUITE_NOTES+=$'\n'
    SUITE_NOTES+="- steady load: ${reqs:-?} requests (wrk -c$CONNECTIONS, GET 3 B / GET 16 KiB / POST 1 KiB in turn); load generator errors: ${errs:-none}"
    SUITE_NOTES+=$'\n'"- samples: ${CSV#"$ROOT"/}"$'\n'
}

# -------------------------------------------------------------------- all --
# `./bench.sh all`: every suite_* function, each in its own ./bench.sh process (same options;
# a suite's processes and ports are gone when it exits), then one table over all of them.

run_all() {
    local suites=() s rc report failed=() reports=()
    # The soak is minutes long and reports memory, not speed, `http` measures the idle
    # wake-ups too, and `syscalls` needs perf: none is a suite of its own in `all`.
    mapfile -t suites < <(declare -F | awk '$3 ~ /^suite_/ && $3 != "suite_soak" && $3 != "suite_idle" && $3 != "suite_syscalls" { sub(/^suite_/, "", $3); print $3 }')
    # Every suite's tools before the first one starts (the grpc and tls suites also need h2load,
    # the tls suite openssl).
    command -v h2load >/dev/null 2>&1 ||
        die "missing tool: h2load (grpc and tls suites); install it with: apt-get install -y nghttp2-client"
    command -v openssl >/dev/null 2>&1 ||
        die "missing tool: openssl (tls suite); install it with: apt-get install -y openssl"
    check_tools
    CLK_TCK=$(getconf CLK_TCK)
    LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
    mkdir -p target/bench
    STAMP=$(date -u +%Y%m%dT%H%M%SZ)
    local opts=(--runs "$RUNS" --duration "$DURATION" --connections "$CONNECTIONS")
    ((BUILD)) || opts+=(--no-build)
    for s in "${suites[@]}"; do
        report=$ROOT/target/bench/results-$STAMP-$s.md
        log "=== suite $s ($(date -u +%H:%M:%S))"
        rc=0
        BENCH_OUT=$report "$ROOT/bench.sh" "$s" "${opts[@]}" >/dev/null || rc=$?
        if ((rc)) || [[ ! -s $report ]]; then
            log "suite $s FAILED (exit $rc); going on with the others"
            failed+=("$s")
        else
            reports+=("$s=$report")
        fi
    done
    OUT=$ROOT/target/bench/results-$STAMP-all.md
    SUITE="all ($(printf '%s ' "${suites[@]}" | sed 's/ $//'))"
    # Each report's main tables (header `| target | io driver |`), prefixed with suite and workload.
    local rows=""
    for report in "${reports[@]}"; do
        rows+=$(awk -v suite="${report%%=*}" '
            /^### / { wl = substr($0, 5); next }
            /^[|] target [|] io driver [|]/ { intable = 1; next }
            /^[|]---/ { next }
            intable && /^[|] / { print "| " suite " | " wl " " $0; next }
            { intable = 0 }' "${report#*=}")$'\n'
    done
    {
        print_header
        # The io driver each Fulcrum target reported (peers and direct are left out).
        printf -- '- io driver: %s\n' "$(awk -F' [|] ' 'NF > 4 && $3 !~ /^(direct|nginx|haproxy|relay)/ && $4 != "-" { print $4 " (" $3 ")" }' <<<"$rows" |
            sort -u | paste -sd, - | sed 's/,/, /g')"
        printf '\n### All suites (min / median / max over the runs)\n\n'
        printf '| suite | workload | target | io driver | req/s | p50 ms | p99 ms | CPU us/req | errors |\n'
        printf '|---|---|---|---|---|---|---|---|---|\n'
        printf '%s' "$rows"
        ((${#failed[@]} == 0)) || printf '\nFailed suites (see the log above): %s\n' "${failed[*]}"
        printf '\nPer-suite reports, with their notes:\n'
        for report in "${reports[@]}"; do printf -- '- %s: %s\n' "${report%%=*}" "${report#*="$ROOT"/}"; done
    } >"$OUT"
    printf '\n'
    cat "$OUT"
    log "written to ${OUT#"$ROOT"/}"
    ((${#failed[@]} == 0))
}

# ------------------------------------------------------------------- main --

if [[ $SUITE == all ]]; then
    run_all
    exit
fi

declare -F "suite_$SUITE" >/dev/null ||
    die "unknown suite '$SUITE' (available: $(declare -F | awk '$3 ~ /^suite_/ { sub(/^suite_/, "", $3); printf "%s%s", sep, $3; sep = " " }'))"
check_tools
CLK_TCK=$(getconf CLK_TCK)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-bench.XXXXXX")
RESULTS=$TMP/results
mkdir -p "$RESULTS" target/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW_LOG=$ROOT/target/bench/raw-$STAMP.log
OUT=${BENCH_OUT:-$ROOT/target/bench/results-$STAMP.md} # set by `all` for each suite

"suite_$SUITE"

{
    print_header
    print_tables
    printf '%s' "${SUITE_NOTES:-}"
} >"$OUT"
printf '\n'
cat "$OUT"
log "written to ${OUT#"$ROOT"/} (raw wrk output: ${RAW_LOG#"$ROOT"/})"
