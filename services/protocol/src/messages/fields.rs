//! Validation of single wire fields, shared by the message conversions.

use std::collections::BTreeSet;

use super::hash::Hash;
use super::DecodeError;

/// Longest member, party, contract, template or id name (bytes).
pub const MAX_NAME_LEN: usize = 255;

/// A present sub-message.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, DecodeError> {
    value.ok_or_else(|| DecodeError::malformed(field, "missing"))
}

/// A name: non-empty, at most [`MAX_NAME_LEN`] bytes, no control characters.
pub fn name(field: &str, value: String) -> Result<String, DecodeError> {
    if value.is_empty() {
        return Err(DecodeError::malformed(field, "empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(DecodeError::malformed(field, format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(DecodeError::malformed(field, format!("contains a control character: {value:?}")));
    }
    Ok(value)
}

/// A set of names given as a list: each a valid [`name`], none twice.
pub fn names(field: &str, values: Vec<String>) -> Result<BTreeSet<String>, DecodeError> {
    let mut set = BTreeSet::new();
    for (i, v) in values.into_iter().enumerate() {
        let v = name(&format!("{field}[{i}]"), v)?;
        if !set.insert(v.clone()) {
            return Err(DecodeError::malformed(format!("{field}[{i}]"), format!("duplicate {v:?}")));
        }
    }
    Ok(set)
}

/// Like [`names`], with at least one.
pub fn non_empty_names(field: &str, values: Vec<String>) -> Result<BTreeSet<String>, DecodeError> {
    let set = names(field, values)?;
    if set.is_empty() {
        return Err(DecodeError::malformed(field, "empty (at least one is required)"));
    }
    Ok(set)
}

/// A SHA-256 hash: exactly 32 bytes.
pub fn hash(field: &str, bytes: Vec<u8>) -> Result<Hash, DecodeError> {
    Hash::from_slice(&bytes)
        .ok_or_else(|| DecodeError::malformed(field, format!("{} bytes, a SHA-256 hash has 32", bytes.len())))
}

/// A request UUID in lowercase hyphenated form (8-4-4-4-12 hex digits).
pub fn uuid(field: &str, value: String) -> Result<String, DecodeError> {
    let groups: Vec<&str> = value.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if lens != [8, 4, 4, 4, 12] || !hex {
        return Err(DecodeError::malformed(field, format!("{value:?} is not a lowercase hyphenated UUID")));
    }
    Ok(value)
}

/// A JSON document.
pub fn json(field: &str, value: String) -> Result<String, DecodeError> {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&value) {
        return Err(DecodeError::malformed(field, format!("not JSON: {e}")));
    }
    Ok(value)
}
