//! One control unit fed arbitrary sequences of frames, timeouts, submits and drains; see
//! `statesync::fuzz_harness::control_unit`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| statesync::fuzz_harness::control_unit(data));
