//! Replays every fuzz target's committed inputs (fuzz/seeds/TARGET/ and
//! fuzz/regressions/TARGET/) through the same check function the libFuzzer target runs
//! (fuzz/checks/TARGET.rs), so a fixed finding stays fixed without a fuzzing toolchain.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/cache_key.rs"]
mod cache_key;
#[path = "../../fuzz/checks/chunked.rs"]
mod chunked;
#[path = "../../fuzz/checks/h2_conn.rs"]
mod h2_conn;
#[path = "../../fuzz/checks/request_head.rs"]
mod request_head;
#[path = "../../fuzz/checks/response_head.rs"]
mod response_head;

/// Every file of fuzz/seeds/TARGET and fuzz/regressions/TARGET, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`, then names every input that failed (each failure's
/// own message is printed above, by the panic hook).
fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds for {target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: inputs that failed their check: {failed:#?}");
}

#[test]
fn request_head() {
    replay("request_head", request_head::check);
}

#[test]
fn response_head() {
    replay("response_head", response_head::check);
}

#[test]
fn chunked() {
    replay("chunked", chunked::check);
}

#[test]
fn cache_key() {
    replay("cache_key", cache_key::check);
}

#[test]
fn h2_conn() {
    replay("h2_conn", h2_conn::check);
}
