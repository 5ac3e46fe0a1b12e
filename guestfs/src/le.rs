//! Bounds-checked little/big-endian field access for on-disk structures.
//!
//! Parsers read a whole structure into a buffer first (its length checked by
//! [`crate::block::ImageFile::read`]), then pick fields with these helpers.
//! They take fixed offsets inside a buffer whose size the caller already
//! checked, so a bad offset here is a programming error, not hostile input;
//! they still return 0 instead of panicking, and debug builds assert.

#[inline]
fn field<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    match off.checked_add(N).and_then(|end| buf.get(off..end)) {
        Some(s) => out.copy_from_slice(s),
        None => debug_assert!(false, "field {off}+{N} outside buffer of {}", buf.len()),
    }
    out
}

pub fn u16le(buf: &[u8], off: usize) -> u16 { u16::from_le_bytes(field(buf, off)) }
pub fn u32le(buf: &[u8], off: usize) -> u32 { u32::from_le_bytes(field(buf, off)) }
pub fn u64le(buf: &[u8], off: usize) -> u64 { u64::from_le_bytes(field(buf, off)) }
pub fn u16be(buf: &[u8], off: usize) -> u16 { u16::from_be_bytes(field(buf, off)) }
pub fn u32be(buf: &[u8], off: usize) -> u32 { u32::from_be_bytes(field(buf, off)) }
pub fn u64be(buf: &[u8], off: usize) -> u64 { u64::from_be_bytes(field(buf, off)) }
pub fn bytes<const N: usize>(buf: &[u8], off: usize) -> [u8; N] { field(buf, off) }

/// A GUID as stored by Microsoft formats (first three fields little-endian),
/// formatted the way Windows and `qemu-img info` print it.
pub fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

/// A UUID stored big-endian (RFC 4122 byte order), as VHD and ext4 store it.
pub fn uuid_string(g: &[u8; 16]) -> String {
    let h: Vec<String> = g.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", h[0..4].concat(), h[4..6].concat(), h[6..8].concat(), h[8..10].concat(), h[10..16].concat())
}
