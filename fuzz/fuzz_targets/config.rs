//! Arbitrary text through the deployment-config parser; see `statesync::fuzz_harness::config`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| statesync::fuzz_harness::config(data));
