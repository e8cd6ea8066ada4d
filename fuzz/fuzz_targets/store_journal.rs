//! The store journal's reader: torn and damaged journals.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_core::fuzzing::store_journal(data));
