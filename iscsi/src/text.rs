//! Text keys (RFC 7143 6.1, 13): `key=value` pairs, each ended by a NUL,
//! as carried by Login and Text PDUs.

use crate::{Error, Result};

/// Most pairs accepted from one negotiation (a target listing thousands of
/// targets in SendTargets is still far below this).
const MAX_PAIRS: usize = 65_536;
/// Longest key or value accepted (RFC 7143 allows 8192 for values, 63 for keys).
const MAX_VALUE: usize = 8192;

/// Encodes pairs as `key=value\0...`.
pub fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Decodes `key=value\0` pairs. Empty strings between NULs are skipped
/// (padding); a pair without `=` or not UTF-8 is a protocol error.
pub fn decode(b: &[u8]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for raw in b.split(|&c| c == 0).filter(|s| !s.is_empty()) {
        if out.len() >= MAX_PAIRS {
            return Err(Error::Protocol(format!("more than {MAX_PAIRS} text keys")));
        }
        if raw.len() > MAX_VALUE + 64 {
            return Err(Error::Protocol(format!("text key of {} bytes", raw.len())));
        }
        let s = std::str::from_utf8(raw).map_err(|_| Error::Protocol("text key is not UTF-8".into()))?;
        let (k, v) = s.split_once('=').ok_or_else(|| Error::Protocol(format!("text key without '=': {:?}", printable(s))))?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The value of `key` (the last one, as a later answer overrides).
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A numerical value (decimal, or 0x hex).
pub fn number(pairs: &[(String, String)], key: &str) -> Result<Option<u64>> {
    let Some(v) = get(pairs, key) else { return Ok(None) };
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) { u64::from_str_radix(h, 16) } else { v.parse() };
    n.map(Some).map_err(|_| Error::Protocol(format!("{key}={} is not a number", printable(v))))
}

/// A string safe to print: control characters replaced, length capped.
pub fn printable(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lookup() {
        let b = encode(&[("HeaderDigest", "None"), ("MaxRecvDataSegmentLength", "262144")]);
        let p = decode(&b).unwrap();
        assert_eq!(get(&p, "HeaderDigest"), Some("None"));
        assert_eq!(number(&p, "MaxRecvDataSegmentLength").unwrap(), Some(262144));
        assert!(decode(b"novalue\0").is_err());
        assert!(number(&decode(b"X=zz\0").unwrap(), "X").is_err());
        assert_eq!(decode(b"\0\0A=\0").unwrap(), vec![("A".to_string(), String::new())]);
    }
}
