//! The SCSI commands vbproxy sends to a LUN, and parsers for their answers.
//!
//! Both transports (the kernel's SG_IO on a block device and the built-in
//! iSCSI initiator) accept only a [`ReadOnlyCommand`]. That enum has no
//! write, format, unmap, reservation or mode-select member, so no code path
//! above it can express a command that changes a LUN: the guarantee is in
//! the type, not in a check someone could forget.
//!
//! Parsers take the response bytes as returned (possibly shorter than asked
//! for, possibly hostile) and never panic; a response too short for a field
//! is an error naming the page and the offset.
#![forbid(unsafe_code)]

mod command;
mod inquiry;
mod capacity;
mod luns;
mod sense;
mod vpd;

pub use capacity::ReadCapacity16;
pub use command::ReadOnlyCommand;
pub use inquiry::StandardInquiry;
pub use luns::{decode_lun, encode_lun, parse_report_luns};
pub use sense::Sense;
pub use vpd::{parse_device_identification, parse_supported_pages, parse_unit_serial, preferred_id, Association, CodeSet, Designator, DesignatorType};

/// A response that does not hold what its page promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was being parsed: "INQUIRY", "VPD page 0x83", ...
    pub what: &'static str,
    /// Byte offset in the response where it went wrong.
    pub offset: usize,
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} response, byte {}: {}", self.what, self.offset, self.reason)
    }
}

impl std::error::Error for ParseError {}

pub(crate) fn short(what: &'static str, offset: usize, need: usize, have: usize) -> ParseError {
    ParseError { what, offset, reason: format!("needs {need} bytes, response has {have}") }
}

pub(crate) fn be16(b: &[u8], at: usize, what: &'static str) -> Result<u16, ParseError> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(|| short(what, at, at + 2, b.len()))
}

pub(crate) fn be32(b: &[u8], at: usize, what: &'static str) -> Result<u32, ParseError> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| short(what, at, at + 4, b.len()))
}

pub(crate) fn be64(b: &[u8], at: usize, what: &'static str) -> Result<u64, ParseError> {
    b.get(at..at + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_be_bytes(a)
        })
        .ok_or_else(|| short(what, at, at + 8, b.len()))
}

/// Printable ASCII from a fixed-width field: trailing spaces and NULs
/// dropped, anything unprintable shown as `?` so a hostile device cannot
/// drive the admin's terminal.
pub fn ascii_field(b: &[u8]) -> String {
    let s: String = b.iter().map(|&c| if (0x20..0x7f).contains(&c) { c as char } else if c == 0 { ' ' } else { '?' }).collect();
    s.trim().to_string()
}
