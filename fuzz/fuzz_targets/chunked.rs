//! libFuzzer entry point of the `chunked` target: the input goes to the check function in
//! fuzz/checks/chunked.rs, which tests/fuzz_replay.rs also runs on the committed inputs.

#![no_main]

#[path = "../checks/chunked.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
