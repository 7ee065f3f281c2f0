//! Any text as a form definition (see `zoufang_fuzz::form_definition`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoufang_fuzz::form_definition(data));
