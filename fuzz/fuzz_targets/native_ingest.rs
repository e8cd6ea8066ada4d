//! Native ingest: the query (first line) and the body of a request.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_core::fuzzing::native_ingest_bytes(data));
