//! Arbitrary datagrams through the frame decoder; see `statesync::fuzz_harness::decode`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| statesync::fuzz_harness::decode(data));
