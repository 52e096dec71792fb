#!/bin/sh
# Writes a stub source file for every build target of every package of a Cargo workspace, so
# `cargo build` can compile the dependencies from the manifests and Cargo.lock alone. The
# Dockerfile's dependency-cache layer runs it before any real source is copied; that layer is
# then rebuilt only when a manifest or the lock file change.
#
# Usage: stub-sources.sh [MANIFEST...]      (run in the workspace root)
#
# Without MANIFEST: ./Cargo.toml, plus every member its `[workspace] members` names (globs such
# as "crates/*" are expanded; `exclude` paths are skipped). Per package, the targets are:
#   - the library: `[lib] path`, else src/lib.rs. Always stubbed: whether a package has an
#     auto-discovered src/lib.rs is not in its manifest, and a stub library left beside a
#     binary-only package's real sources does no harm;
#   - every declared `[[bin]]`, `[[bench]]`, `[[example]]` and `[[test]]`, at its `path`, else at
#     Cargo's default (src/main.rs for a binary named like its package, src/bin/NAME.rs,
#     benches/NAME.rs, examples/NAME.rs, tests/NAME.rs);
#   - `build = "FILE"` under [package]. An undeclared build.rs cannot be seen here: its
#     package's build-dependencies then compile with the real sources instead.
# Auto-discovered binaries, benches, examples and tests are not guessed: the build must not name
# them (the Dockerfile stubs its one auto-discovered example itself).
#
# An existing file is never overwritten, so running it in a real checkout changes nothing there.
set -eu

LIB_STUB='//! Dependency-cache stub.'
MAIN_STUB='//! Dependency-cache stub.
fn main() {}'

# The members of the workspace whose root manifest is $1, one manifest path per line.
members() {
    root_dir=$(dirname "$1")
    # "members PATTERN" and "exclude PATH" lines from the [workspace] arrays (one line or many).
    awk '
        /^\[/ { in_ws = ($0 ~ /^\[workspace\][ \t]*(#.*)?$/); key = ""; next }
        in_ws && key == "" && /^[ \t]*(members|exclude)[ \t]*=/ {
            key = $0; sub(/^[ \t]*/, "", key); sub(/[ \t=].*/, "", key)
            sub(/^[^=]*=/, "")
        }
        key != "" {
            line = $0; sub(/#.*/, "", line)
            while (match(line, /"[^"]*"|\047[^\047]*\047/)) {
                print key, substr(line, RSTART + 1, RLENGTH - 2)
                line = substr(line, RSTART + RLENGTH)
            }
            if ($0 ~ /\]/) key = ""
        }
    ' "$1" >"$tmp/workspace"
    excluded=$(sed -n 's/^exclude //p' "$tmp/workspace")
    sed -n 's/^members //p' "$tmp/workspace" | while IFS= read -r pattern; do
        # Unquoted on purpose: the pattern is a glob, expanded relative to the workspace root.
        # shellcheck disable=SC2086
        for dir in "$root_dir"/$pattern; do
            [ -f "$dir/Cargo.toml" ] || continue
            skip=no
            for ex in $excluded; do
                [ "$dir" = "$root_dir/$ex" ] && skip=yes
            done
            [ "$skip" = yes ] || printf '%s\n' "$dir/Cargo.toml"
        done
    done
}

# The targets of the package whose manifest is $1: one "<lib|main> <path>" line per file, the
# path relative to the manifest's directory. Nothing for a virtual manifest (no [package]).
targets() {
    awk '
        function unquote(s) { sub(/^[^=]*=[ \t]*["\047]/, "", s); sub(/["\047].*/, "", s); return s }
        function flush() {
            if (kind != "") { n++; kinds[n] = kind; names[n] = name; paths[n] = path }
            kind = ""; name = ""; path = ""
        }
        /^\[/ {
            flush()
            section = $0
            if ($0 ~ /^\[package\]/) has_package = 1
            else if ($0 ~ /^\[lib\]/) kind = "lib"
            else if (match($0, /^\[\[(bin|bench|example|test)\]\]/)) kind = substr($0, 3, RLENGTH - 4)
            next
        }
        section ~ /^\[package\]/ && /^[ \t]*name[ \t]*=/ { package = unquote($0) }
        section ~ /^\[package\]/ && /^[ \t]*build[ \t]*=[ \t]*["\047]/ { build = unquote($0) }
        kind != "" && /^[ \t]*name[ \t]*=/ { name = unquote($0) }
        kind != "" && /^[ \t]*path[ \t]*=/ { path = unquote($0) }
        END {
            flush()
            if (!has_package) exit
            lib = "src/lib.rs"
            for (i = 1; i <= n; i++) {
                k = kinds[i]; p = paths[i]
                if (k == "lib") { if (p != "") lib = p; continue }
                if (p == "") {
                    if (k == "bin") p = (names[i] == package) ? "src/main.rs" : "src/bin/" names[i] ".rs"
                    else if (k == "bench") p = "benches/" names[i] ".rs"
                    else p = k "s/" names[i] ".rs"
                }
                print "main", p
            }
            print "lib", lib
            if (build != "") print "main", build
        }
    ' "$1"
}

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT

if [ $# -eq 0 ]; then
    set -- Cargo.toml
    members Cargo.toml >"$tmp/members"
    while IFS= read -r manifest; do
        set -- "$@" "$manifest"
    done <"$tmp/members"
fi

for manifest in "$@"; do
    [ -f "$manifest" ] || { echo "stub-sources: no such manifest: $manifest" >&2; exit 1; }
    dir=$(dirname "$manifest")
    dir=${dir#./}
    targets "$manifest" | sort -u | while read -r kind path; do
        if [ "$dir" = . ]; then file=$path; else file=$dir/$path; fi
        if [ "$kind" = lib ]; then stub=$LIB_STUB; else stub=$MAIN_STUB; fi
        [ -e "$file" ] && continue
        mkdir -p "$(dirname "$file")"
        printf '%s\n' "$stub" >"$file"
    done
done
