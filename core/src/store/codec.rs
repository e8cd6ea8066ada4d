//! The on-disk form of a record: a format byte, a CRC-32 of everything after
//! it, the metadata as JSON, then the payload (event JSON text) as is.
//!
//! ```text
//! [version: u8][crc32: u32 LE][meta_len: u32 LE][meta JSON][payload]
//! ```
//!
//! redb checks its pages' checksums on open; the record's own CRC also names
//! *which* record is damaged, and catches damage redb's page checks cannot
//! see (a page rewritten consistently by something else).

use serde::Serialize;
use serde::de::DeserializeOwned;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 4;

/// Encodes `meta` and `payload` into one checksummed value.
pub(super) fn encode<M: Serialize>(meta: &M, payload: &str) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).expect("store metadata always serialises");
    let mut out = Vec::with_capacity(HEADER + meta.len() + payload.len());
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(payload.as_bytes());
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a value written by [`encode`]; the error says what is wrong.
pub(super) fn decode<M: DeserializeOwned>(bytes: &[u8]) -> Result<(M, String), String> {
    if bytes.len() < HEADER {
        return Err(format!("record is {} bytes, shorter than its header", bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(format!(
            "record format {} is not one this Hookline reads ({VERSION})",
            bytes[0]
        ));
    }
    let stored = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[5..]) != stored {
        return Err("checksum mismatch".to_string());
    }
    let meta_len = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes")) as usize;
    let meta_end = HEADER
        .checked_add(meta_len)
        .filter(|end| *end <= bytes.len())
        .ok_or("metadata length runs past the record")?;
    let meta = serde_json::from_slice(&bytes[HEADER..meta_end]).map_err(|e| format!("metadata: {e}"))?;
    let payload = std::str::from_utf8(&bytes[meta_end..]).map_err(|e| format!("payload: {e}"))?;
    Ok((meta, payload.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_catches_every_flipped_byte() {
        let bytes = encode(&serde_json::json!({"a": 1}), r#"{"name":"x"}"#);
        let (meta, payload): (serde_json::Value, String) = decode(&bytes).unwrap();
        assert_eq!(meta, serde_json::json!({"a": 1}));
        assert_eq!(payload, r#"{"name":"x"}"#);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x20;
            assert!(
                decode::<serde_json::Value>(&damaged).is_err(),
                "byte {i} flipped went unnoticed"
            );
        }
        assert!(decode::<serde_json::Value>(&bytes[..4]).is_err());
    }
}
