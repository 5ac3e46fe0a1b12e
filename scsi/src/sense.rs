//! Sense data (SPC-4 4.5): why a command failed.

/// Sense key and additional sense code of a failed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    /// Fixed (0x70/0x71) or descriptor (0x72/0x73) format; `None` when the
    /// bytes are neither.
    pub fn parse(b: &[u8]) -> Option<Sense> {
        match b.first()? & 0x7f {
            0x70 | 0x71 => Some(Sense { key: b.get(2)? & 0x0f, asc: *b.get(12).unwrap_or(&0), ascq: *b.get(13).unwrap_or(&0) }),
            0x72 | 0x73 => Some(Sense { key: b.get(1)? & 0x0f, asc: *b.get(2).unwrap_or(&0), ascq: *b.get(3).unwrap_or(&0) }),
            _ => None,
        }
    }

    pub fn key_name(&self) -> &'static str {
        match self.key {
            0x0 => "NO SENSE",
            0x1 => "RECOVERED ERROR",
            0x2 => "NOT READY",
            0x3 => "MEDIUM ERROR",
            0x4 => "HARDWARE ERROR",
            0x5 => "ILLEGAL REQUEST",
            0x6 => "UNIT ATTENTION",
            0x7 => "DATA PROTECT",
            0xb => "ABORTED COMMAND",
            _ => "OTHER",
        }
    }

    /// A unit attention (reset, LUN inventory changed, ...) that a retry
    /// clears.
    pub fn is_unit_attention(&self) -> bool {
        self.key == 0x6
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (key {:#x}, ASC/ASCQ {:#04x}/{:#04x})", self.key_name(), self.key, self.asc, self.ascq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x05;
        fixed[12] = 0x24;
        assert_eq!(Sense::parse(&fixed), Some(Sense { key: 5, asc: 0x24, ascq: 0 }));
        assert_eq!(Sense::parse(&[0x72, 0x06, 0x29, 0x00]), Some(Sense { key: 6, asc: 0x29, ascq: 0 }));
        assert_eq!(Sense::parse(&[0x10]), None);
        assert_eq!(Sense::parse(&[]), None);
    }
}
