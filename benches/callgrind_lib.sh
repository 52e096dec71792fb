# shellcheck shell=bash
# benches/callgrind_lib.sh - what the instruction-counting scripts under benches/ share
# (sourced): a scratch directory and the processes to stop on exit, logging, and waiting for a
# port.

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

log() { printf '[callgrind] %s\n' "$*" >&2; }

# wait_port PORT: until something listens there (bounded, 60 s: valgrind starts slowly).
wait_port() {
    local i
    for ((i = 0; i < 600; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}
