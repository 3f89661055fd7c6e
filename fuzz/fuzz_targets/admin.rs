//! Admin requests through the daemon's request handler; see
//! `statesync::fuzz_harness::admin`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| statesync::fuzz_harness::admin(data));
