#![no_main]
//! Protocol message decoding (see `syncline_fuzz_targets::protocol_message`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncline_fuzz_targets::protocol_message(data));
