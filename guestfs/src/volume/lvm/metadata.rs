//! The LVM2 metadata text format ("Text Format Volume Group"): nested
//! sections `name { ... }`, assignments `key = value` whose value is an
//! integer, a double-quoted string (backslash escapes the next character) or
//! an array `[v, v, ...]`, and `#` comments to the end of the line.
//!
//! The parser is bounded: nesting depth and the number of items are capped,
//! and the input itself is capped by the caller (the metadata area size).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    /// Floats appear in LVM config files, never in VG metadata; kept as text.
    Float(String),
    Str(String),
    Array(Vec<Value>),
    Section(Section),
}

/// A section's entries in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Section(pub Vec<(String, Value)>);

impl Section {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Value::Section(s) => Some(s),
            _ => None,
        }
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn array(&self, key: &str) -> Option<&[Value]> {
        match self.get(key)? {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// Subsections in file order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.0.iter().filter_map(|(k, v)| match v {
            Value::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }
    /// True when `key` is an array of strings containing `flag`.
    pub fn has_flag(&self, key: &str, flag: &str) -> bool {
        self.array(key).is_some_and(|a| a.iter().any(|v| matches!(v, Value::Str(s) if s == flag)))
    }
}

#[derive(Debug, PartialEq)]
pub(crate) struct ParseError {
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {} of the metadata text", self.reason, self.offset)
    }
}

const MAX_DEPTH: usize = 32;
const MAX_ITEMS: usize = 1_000_000;

/// Parses a whole metadata text. A NUL ends the text (LVM pads with them).
pub(crate) fn parse(text: &[u8]) -> Result<Section, ParseError> {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let mut p = Parser { s: text.get(..end).unwrap_or_default(), pos: 0, items: 0 };
    let root = p.section_body(0)?;
    p.skip_space();
    if p.pos < p.s.len() {
        return Err(p.err("unexpected '}'"));
    }
    Ok(root)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    items: usize,
}

impl Parser<'_> {
    fn err(&self, reason: impl Into<String>) -> ParseError {
        ParseError { offset: self.pos, reason: reason.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn count(&mut self) -> Result<(), ParseError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(self.err(format!("more than {MAX_ITEMS} items")));
        }
        Ok(())
    }

    fn is_ident_char(c: u8) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'-' | b'/' | b'@')
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(Self::is_ident_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(self.s.get(start..self.pos).unwrap_or_default()).into_owned())
    }

    /// Entries until '}' (not consumed) or the end.
    fn section_body(&mut self, depth: usize) -> Result<Section, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("sections nested deeper than {MAX_DEPTH}")));
        }
        let mut entries = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None | Some(b'}') => return Ok(Section(entries)),
                _ => {}
            }
            self.count()?;
            let key = self.ident()?;
            self.skip_space();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let body = self.section_body(depth + 1)?;
                    if self.peek() != Some(b'}') {
                        return Err(self.err(format!("section {key:?} is not closed")));
                    }
                    self.pos += 1;
                    entries.push((key, Value::Section(body)));
                }
                Some(b'=') => {
                    self.pos += 1;
                    self.skip_space();
                    let v = self.value(depth)?;
                    entries.push((key, v));
                }
                _ => return Err(self.err(format!("expected '=' or '{{' after {key:?}"))),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') => {
                if depth > MAX_DEPTH {
                    return Err(self.err("arrays nested too deep"));
                }
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    if !items.is_empty() {
                        if self.peek() != Some(b',') {
                            return Err(self.err("expected ',' or ']' in array"));
                        }
                        self.pos += 1;
                        self.skip_space();
                    }
                    self.count()?;
                    items.push(self.value(depth + 1)?);
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
                    self.pos += 1;
                }
                let t = String::from_utf8_lossy(self.s.get(start..self.pos).unwrap_or_default()).into_owned();
                if t.contains('.') {
                    return Ok(Value::Float(t));
                }
                t.parse().map(Value::Int).map_err(|_| ParseError { offset: start, reason: format!("bad integer {t:?}") })
            }
            _ => Err(self.err("expected a value")),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(ParseError { offset: start, reason: "unterminated string".into() }),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => return Err(ParseError { offset: start, reason: "unterminated string".into() }),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vg_metadata() {
        let t = br#"vg0 {
id = "abc"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
logical_volumes {
lv-1 {
segment1 {
stripes = [
"pv0", 0,
"pv1", 12
]
}
}
}
}
# Generated by LVM2
contents = "Text \"Format\" \\ Volume Group"
version = 1
"#;
        let root = parse(t).unwrap();
        let vg = root.section("vg0").unwrap();
        assert_eq!(vg.int("seqno"), Some(3));
        assert!(vg.has_flag("status", "WRITE"));
        let seg = vg.section("logical_volumes").unwrap().section("lv-1").unwrap().section("segment1").unwrap();
        assert_eq!(seg.array("stripes").unwrap().len(), 4);
        assert_eq!(root.str("contents"), Some(r#"Text "Format" \ Volume Group"#));
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        for bad in [&b"a {"[..], b"a = \"x", b"a = [1 2]", b"}", b"a = ", b"= 1", b"a = 99999999999999999999999"] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "a {".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
        let deep = format!("a = {}", "[".repeat(100));
        assert!(parse(deep.as_bytes()).is_err());
    }
}
