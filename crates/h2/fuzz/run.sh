#!/usr/bin/env bash
# crates/h2/fuzz/run.sh [SECONDS] [TARGET...] - runs each cargo-fuzz target of fulcrum-h2 (the
# same script as the repository's fuzz/run.sh, paths relative to crates/h2) for SECONDS (default
# 60) with libFuzzer's -max_total_time, starting from the committed seeds (fuzz/seeds/TARGET)
# plus the corpus kept from earlier runs (fuzz/corpus/TARGET, not committed). Exits non-zero on
# the first crash or failed invariant and names the input that caused it
# (fuzz/artifacts/TARGET/...).
#
# Toolchain: the pinned stable Rust (rust-toolchain.toml) with RUSTC_BOOTSTRAP=1 for the
# nightly-only flags cargo-fuzz passes (-Zsanitizer=address, sancov); no nightly needed.
# Installs cargo-fuzz (cargo install --locked) when it is missing.
# Environment: FUZZ_SANITIZER (default address; `none` for a faster, uninstrumented-memory run),
# FUZZ_JOBS (parallel fuzzing processes per target, default 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

SECONDS_PER_TARGET=${1:-60}
[[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
shift $(($# > 0 ? 1 : 0))
SANITIZER=${FUZZ_SANITIZER:-address}
JOBS=${FUZZ_JOBS:-1}
export RUSTC_BOOTSTRAP=1

log() { printf '[fuzz] %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list)
fi

# Debug assertions on: arithmetic overflow is a crash too.
log "building ${targets[*]} (sanitizer: $SANITIZER)"
cargo fuzz build --debug-assertions --sanitizer "$SANITIZER"

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [[ -d seeds/$t ]] && seeds=("seeds/$t")
    log "$t: ${SECONDS_PER_TARGET} s"
    rc=0
    cargo fuzz run --debug-assertions --sanitizer "$SANITIZER" --jobs "$JOBS" "$t" \
        "corpus/$t" "${seeds[@]}" -- -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        2>"artifacts/$t.log" || rc=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "artifacts/$t.log" >&2 || true
    if ((rc)); then
        tail -n 40 "artifacts/$t.log" >&2
        crash=$(grep -o "artifacts/$t/[A-Za-z0-9_-]*" "artifacts/$t.log" | tail -n 1 || true)
        log "$t FAILED (exit $rc); input: fuzz/${crash:-artifacts/$t/}; full log: fuzz/artifacts/$t.log"
        log "reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --debug-assertions $t ${crash:-<input>})"
        exit 1
    fi
done
log "no crash in ${targets[*]} (${SECONDS_PER_TARGET} s each)"
