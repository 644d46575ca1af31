//! A small seeded mutator for the test suite's short fuzz runs (cargo-fuzz brings its own):
//! bit flips, byte changes, insertions, deletions, truncation, duplication of a slice and
//! splices of two inputs, a few at a time.

use rand::rngs::StdRng;
use rand::Rng;

/// `input` changed by one to four random edits (`other` is spliced from sometimes).
pub fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'[', b'='][rng.random_range(0..8)];
            }
            2 => {
                let i = rng.random_range(0..=len);
                out.insert(i, rng.random());
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(16));
                out.drain(i..i + n);
            }
            4 if len > 0 => out.truncate(rng.random_range(0..len)),
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(64));
                let slice = out[i..i + n].to_vec();
                let at = rng.random_range(0..=len);
                out.splice(at..at, slice);
            }
            6 if !other.is_empty() => {
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                // A varint-looking length far too large, where parsers read lengths.
                let i = rng.random_range(0..=len);
                out.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
        }
    }
    out
}
