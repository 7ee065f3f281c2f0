//! Any bytes as every protocol message and chunk frame (see `zoufang_fuzz::protocol`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoufang_fuzz::protocol(data));
