//! `JSON.stringify(JSON.parse())`: the serializer every body goes through.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookline_core::fuzzing::json_canonical(data);
});
