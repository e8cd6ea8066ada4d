//! A `replace` verdict's event as a guest lowered it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookline_core::fuzzing::replace_event_bytes(data);
});
