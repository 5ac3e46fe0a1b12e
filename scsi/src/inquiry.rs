//! Standard INQUIRY data (SPC-4 6.6.2).

use crate::{ascii_field, short, ParseError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardInquiry {
    /// Peripheral qualifier (0: connected; 1: capable but not connected;
    /// 3: no logical unit at this LUN).
    pub qualifier: u8,
    /// Peripheral device type (0: direct-access block device).
    pub device_type: u8,
    pub removable: bool,
    pub version: u8,
    pub vendor: String,
    pub model: String,
    pub revision: String,
}

impl StandardInquiry {
    pub fn parse(b: &[u8]) -> Result<StandardInquiry, ParseError> {
        const WHAT: &str = "INQUIRY";
        if b.len() < 36 {
            return Err(short(WHAT, 0, 36, b.len()));
        }
        Ok(StandardInquiry {
            qualifier: b[0] >> 5,
            device_type: b[0] & 0x1f,
            removable: b[1] & 0x80 != 0,
            version: b[2],
            vendor: ascii_field(&b[8..16]),
            model: ascii_field(&b[16..32]),
            revision: ascii_field(&b[32..36]),
        })
    }

    /// A disk that is really there (qualifier 0, type 0).
    pub fn is_present_disk(&self) -> bool {
        self.qualifier == 0 && self.device_type == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_rejects_short() {
        let mut b = vec![0u8; 36];
        b[2] = 6;
        b[8..16].copy_from_slice(b"LIO-ORG ");
        b[16..32].copy_from_slice(b"disk1           ");
        b[32..36].copy_from_slice(b"4.0\0");
        let i = StandardInquiry::parse(&b).unwrap();
        assert_eq!((i.vendor.as_str(), i.model.as_str(), i.revision.as_str()), ("LIO-ORG", "disk1", "4.0"));
        assert!(i.is_present_disk());
        assert!(StandardInquiry::parse(&b[..20]).is_err());
    }
}
