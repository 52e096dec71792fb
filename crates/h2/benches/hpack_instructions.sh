#!/usr/bin/env bash
# benches/hpack_instructions.sh [FILTER] - instructions per operation for each case of
# benches/hpack.rs (or those whose name contains FILTER), counted with valgrind's callgrind:
# each case runs 1000 and 11000 times and the difference is divided by 10000, so setup and
# process start cancel out. A noise-free complement to the criterion timings on a shared
# machine. Needs valgrind (apt-get install -y valgrind).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

filter=${1:-}
bin=$(cargo bench --bench hpack --no-run 2>&1 | grep -o '(/[^)]*hpack-[0-9a-f]*)' | tr -d '()' | tail -n 1)
[[ -x $bin ]] || { echo "bench binary not found" >&2; exit 1; }

count() { # CASE N -> instructions of the whole run
    HPACK_BENCH_ITERS="$1:$2" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

printf '%-36s %12s\n' case instructions
while read -r case; do
    [[ -z $filter || $case == *"$filter"* ]] || continue
    a=$(count "$case" 1000)
    b=$(count "$case" 11000)
    printf '%-36s %12d\n' "$case" $(((b - a) / 10000))
done < <(HPACK_BENCH_ITERS=list "$bin")
