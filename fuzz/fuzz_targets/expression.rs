//! Any text as an expression (see `zoufang_fuzz::expression`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoufang_fuzz::expression(data));
