//! Fuzz targets: each takes arbitrary bytes and panics only on a bug. cargo-fuzz runs them
//! (`fuzz/`, nightly); the test suite runs them over the committed corpus in `fuzz/corpus/` and
//! a bounded number of seeded mutations of it (`tests/corpus.rs`, stable).

pub mod mutate;

use std::io::Write;

use syncline_protocol::messages::{decode, encode};

/// Protocol message decoding: any bytes decode to a message or a `DecodeError` naming the
/// field; a message that decodes encodes to bytes that decode to the same message.
pub fn protocol_message(data: &[u8]) {
    match decode(data) {
        Ok(message) => {
            let again = decode(&encode(&message)).unwrap_or_else(|e| panic!("re-encoded {message:?} fails: {e}"));
            assert_eq!(again, message, "a decoded message survives encoding");
        }
        Err(e) => assert!(!e.to_string().is_empty(), "a decode error says what is wrong"),
    }
}

/// The daemon's config loader: any file loads or is refused with a one-line error naming the
/// file, never a panic.
pub fn config_file(data: &[u8]) {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("a temp file");
    file.write_all(data).expect("writing the temp file");
    if let Err(e) = syncline_cli::config::load(&[file.path().to_path_buf()]) {
        let text = e.to_string();
        assert!(!text.is_empty(), "a config error says what is wrong");
        assert!(!text.contains("panicked"), "{text}");
    }
}
