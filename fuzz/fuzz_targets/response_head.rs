//! libFuzzer entry point of the `response_head` target: the input goes to the check function in
//! fuzz/checks/response_head.rs, which tests/fuzz_replay.rs also runs on the committed inputs.

#![no_main]

#[path = "../checks/response_head.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
