//! Any text as the answers of the shipped form (see `zoufang_fuzz::answers`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoufang_fuzz::answers(data));
