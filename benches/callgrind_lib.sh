# shellcheck shell=bash
# benches/callgrind_lib.sh - what the measuring scripts under benches/ share (sourced): a
# scratch directory and the processes to stop on exit, logging, waiting for a port, and the
# HTTP/1.1 backend.

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# log MESSAGE: to stderr, prefixed with the script's name.
log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# wait_port PORT: until something listens there (bounded, 60 s: valgrind starts slowly).
wait_port() {
    local i
    for ((i = 0; i < 600; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
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
