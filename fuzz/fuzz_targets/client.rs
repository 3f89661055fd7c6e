//! One client fed arbitrary sequences of frames, timeouts and drains; see
//! `statesync::fuzz_harness::client`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| statesync::fuzz_harness::client(data));
