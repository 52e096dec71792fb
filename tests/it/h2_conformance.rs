//! HTTP/2 conformance of the listener on the native engine: the `httpwg-cli` suite (crates.io,
//! the h2spec replacement: 107 cases over RFC 9113 sections 3 to 8) run against the real
//! binary in front of a real backend. Every case must pass; hyperium `h2` passes 87 of them,
//! so this module pins the native engine whatever `FULCRUM_TEST_H2_ENGINE` says.

use std::process::Command;

use crate::harness::*;

/// The `httpwg` binary: `HTTPWG`, else on PATH (`.ci/test` installs it with
/// `cargo install httpwg-cli --locked`).
fn httpwg() -> String {
    let candidate = std::env::var("HTTPWG").unwrap_or_else(|_| "httpwg".to_owned());
    // It answers `--version` with its usage (exit 0 either way is not promised): look for it.
    let found = Command::new(&candidate).arg("--version").output().is_ok();
    assert!(
        found,
        "the httpwg-cli conformance suite is required for this test and `{candidate}` was not \
         found: install it with `cargo install httpwg-cli --locked` (or set HTTPWG to its path)"
    );
    candidate
}

#[test]
fn the_httpwg_suite_passes_on_the_native_engine() {
    let httpwg = httpwg();
    // Plain bodies are the backend's name: at least 5 bytes, as one case needs.
    let backend = TestBackend::named("conformance");
    let lb = Fulcrum::builder().workers(1).backend(&backend).h2_engine("native").start();
    // Bounded: each case waits at most one frame timeout; the whole suite takes seconds.
    let out = Command::new("timeout")
        .args(["120", &httpwg, "-a", &lb.addr().to_string(), "--frame-timeout", "2000"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let plain: String = strip_ansi(&log);
    let summary = plain.lines().find(|l| l.contains("Passed")).unwrap_or("no summary");
    assert!(
        out.status.success() && summary.contains("Passed 107/107"),
        "httpwg: {summary}; failed cases:\n{}",
        plain
            .lines()
            .filter(|l| l.contains("Test failed") || l.contains("Message:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `text` without terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
