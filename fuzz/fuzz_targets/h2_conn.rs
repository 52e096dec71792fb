//! libFuzzer entry point of the `h2_conn` target: the input goes to the check function in
//! fuzz/checks/h2_conn.rs, which tests/it/fuzz_replay.rs also runs on the committed inputs.

#![no_main]

#[path = "../checks/h2_conn.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
