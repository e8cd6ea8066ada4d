//! Relay ingest: a signed body's events and `time_ms`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_core::fuzzing::relay_ingest(data));
