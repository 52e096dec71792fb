#!/bin/sh
# Writes a stub source file for every build target Cargo.toml declares (the library, binaries,
# benches, examples, tests), so `cargo build` can compile the dependencies from Cargo.toml and
# Cargo.lock alone. The Dockerfile's dependency-cache layer runs this before any real source is
# copied; that layer is then rebuilt only when the manifest or the lock file change.
# Usage: stub-sources.sh [Cargo.toml]   (run in the package directory)
set -eu
manifest=${1:-Cargo.toml}

# One line per target: "<kind> <path>", with Cargo's default path when none is given.
awk '
    function flush() {
        if (kind == "") return
        if (path == "") {
            if (kind == "lib") path = "src/lib.rs"
            else if (kind == "bin") path = "src/main.rs"
            else if (kind == "bench") path = "benches/" name ".rs"
            else path = kind "s/" name ".rs"
        }
        print kind, path
        kind = ""; name = ""; path = ""
    }
    /^\[/ {
        flush()
        if ($0 ~ /^\[lib\]/) kind = "lib"
        else if (match($0, /^\[\[(bin|bench|example|test)\]\]/)) kind = substr($0, 3, RLENGTH - 4)
        next
    }
    kind != "" && /^[ \t]*name[ \t]*=/ { name = $0; sub(/^[^"]*"/, "", name); sub(/".*/, "", name) }
    kind != "" && /^[ \t]*path[ \t]*=/ { path = $0; sub(/^[^"]*"/, "", path); sub(/".*/, "", path) }
    END {
        flush()
        print "lib src/lib.rs"
        print "bin src/main.rs"
    }
' "$manifest" | sort -u | while read -r kind path; do
    mkdir -p "$(dirname "$path")"
    if [ "$kind" = lib ]; then
        printf '//! Dependency-cache stub.\n' >"$path"
    else
        printf '//! Dependency-cache stub.\nfn main() {}\n' >"$path"
    fi
done
