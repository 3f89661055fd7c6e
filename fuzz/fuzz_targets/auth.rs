//! Datagrams, changed frames and replays through frame authentication; see
//! `statesync::fuzz_harness::auth`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| statesync::fuzz_harness::auth(data));
