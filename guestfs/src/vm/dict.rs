//! The `key = "value"` dictionary format shared by `.vmx`, `.vmsd` and
//! `.vmxf`-style files.
//!
//! Keys are case-insensitive (VMware writes `scsi0:0.fileName` and reads
//! `SCSI0:0.FILENAME` alike) and stored lowercased; a key given twice keeps
//! its last value, as VMware does. Values are quoted; inside quotes `|XX`
//! (two hex digits) is an escaped byte (`|22` is `"`, `|7C` is `|`).
//! Blank lines and lines starting with `#` are ignored.

use super::MAX_CONFIG_BYTES;
use std::collections::BTreeMap;

/// Why a configuration file cannot be read: the line (1-based; 0 for the
/// file as a whole) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for DictError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

impl std::error::Error for DictError {}

/// Parsed `key = "value"` entries, keys lowercased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dict {
    entries: BTreeMap<String, String>,
}

impl Dict {
    /// The value of `key` (any case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    /// A boolean value as VMware writes it (`TRUE`/`FALSE`, any case).
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)?.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        }
    }

    /// Every (lowercased key, value), sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn err(line: usize, reason: impl Into<String>) -> DictError {
    DictError { line, reason: reason.into() }
}

/// Parses a configuration file. `what` names the format in messages
/// (`.vmx`, `.vmsd`).
pub fn parse(bytes: &[u8], what: &str) -> Result<Dict, DictError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(err(0, format!("{} bytes: larger than any {what} file ({MAX_CONFIG_BYTES} bytes at most)", bytes.len())));
    }
    if bytes.contains(&0) {
        return Err(err(0, format!("contains NUL bytes: not a {what} text file")));
    }
    let mut d = Dict::default();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(n, format!("expected key = \"value\", found {:?}", shorten(line))));
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
            return Err(err(n, format!("invalid key {:?}", shorten(key))));
        }
        let value = parse_value(value.trim()).map_err(|r| err(n, format!("{key}: {r}")))?;
        d.entries.insert(key.to_ascii_lowercase(), value);
    }
    Ok(d)
}

/// A quoted value with `|XX` escapes, or a bare word (old files).
fn parse_value(v: &str) -> Result<String, String> {
    let Some(rest) = v.strip_prefix('"') else {
        if v.contains('"') {
            return Err(format!("stray quote in value {:?}", shorten(v)));
        }
        return Ok(v.to_owned());
    };
    let Some(end) = rest.find('"') else {
        return Err("unterminated quoted value".into());
    };
    let (inner, after) = rest.split_at(end);
    let after = after.get(1..).unwrap_or("").trim();
    if !after.is_empty() && !after.starts_with('#') {
        return Err(format!("unexpected text after the closing quote: {:?}", shorten(after)));
    }
    Ok(unescape(inner))
}

/// Decodes `|XX` escapes; a `|` not followed by two hex digits is kept.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'|' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn shorten(s: &str) -> String {
    let mut t: String = s.chars().take(60).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escapes_comments_and_duplicates() {
        let text = b"# comment\n.encoding = \"UTF-8\"\r\nDisplayName = \"web |22one|22 |7C x\"\n\nscsi0:0.fileName = \"a.vmdk\" # trailing\nSCSI0:0.FILENAME = \"b.vmdk\"\nbare = TRUE\n";
        let d = parse(text, ".vmx").unwrap();
        assert_eq!(d.get("displayname"), Some("web \"one\" | x"));
        assert_eq!(d.get("scsi0:0.fileName"), Some("b.vmdk"));
        assert_eq!(d.get_bool("bare"), Some(true));
        assert_eq!(d.get(".encoding"), Some("UTF-8"));
    }

    #[test]
    fn bad_input_is_an_error_with_a_line() {
        assert_eq!(parse(b"a = \"1\"\njunk\n", ".vmx").unwrap_err().line, 2);
        assert_eq!(parse(b"a = \"1\n", ".vmx").unwrap_err().line, 1);
        assert_eq!(parse(b"a = \"1\" x\n", ".vmx").unwrap_err().line, 1);
        assert_eq!(parse(b"\x00\x01", ".vmx").unwrap_err().line, 0);
        assert!(parse(&vec![b'#'; MAX_CONFIG_BYTES + 1], ".vmx").is_err());
        assert_eq!(parse(b"a = |", ".vmx").unwrap().get("a"), Some("|"));
        assert_eq!(parse(b"a = \"|4\"", ".vmx").unwrap().get("a"), Some("|4"));
    }
}
