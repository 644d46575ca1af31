#![no_main]
//! The daemon's config loader (see `syncline_fuzz_targets::config_file`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_fuzz_targets::config_file(data));
