//! libFuzzer entry point of the `cache_key` target: the input goes to the check function in
//! fuzz/checks/cache_key.rs, which tests/fuzz_replay.rs also runs on the committed inputs.

#![no_main]

#[path = "../checks/cache_key.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
