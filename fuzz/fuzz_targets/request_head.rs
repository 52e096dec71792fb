//! libFuzzer entry point of the `request_head` target: the input goes to the check function in
//! fuzz/checks/request_head.rs, which tests/fuzz_replay.rs also runs on the committed inputs.

#![no_main]

#[path = "../checks/request_head.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
