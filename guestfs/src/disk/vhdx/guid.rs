//! GUIDs as MS-VHDX stores them: the first three fields little-endian, the
//! last eight bytes in order.

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// A GUID from its textual fields, for the constants of the spec.
    pub const fn new(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 16]
    }

    /// Parses `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` (braces optional), the
    /// form parent locators use.
    pub fn parse(s: &str) -> Option<Guid> {
        let s = s.trim();
        let s = s.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(s);
        let parts: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        if lens != [8, 4, 4, 4, 12] || !s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
            return None;
        }
        let a = u32::from_str_radix(parts.first()?, 16).ok()?;
        let b = u16::from_str_radix(parts.get(1)?, 16).ok()?;
        let c = u16::from_str_radix(parts.get(2)?, 16).ok()?;
        let tail = format!("{}{}", parts.get(3)?, parts.get(4)?);
        let mut d = [0u8; 8];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = u8::from_str_radix(tail.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        Some(Guid::new(a, b, c, d))
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::le::guid_string(&self.0))
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{self}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips() {
        let g = Guid::new(0x2DC27766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
        assert_eq!(g.to_string(), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert_eq!(Guid::parse("{2DC27766-F623-4200-9D64-115E9BFD4A08}"), Some(g));
        assert_eq!(Guid::parse("2dc27766-f623-4200-9d64-115e9bfd4a08"), Some(g));
        assert_eq!(Guid::parse("{2DC27766-F623-4200-9D64-115E9BFD4A0}"), None);
        assert_eq!(Guid::parse("{2DC27766-F623-4200-9D64-115E9BFD4A0G}"), None);
        assert_eq!(Guid::parse("+DC27766-F623-4200-9D64-115E9BFD4A08"), None);
    }
}
