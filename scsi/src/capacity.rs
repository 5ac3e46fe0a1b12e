//! READ CAPACITY (16) parameter data (SBC-3 5.16.2).

use crate::{be32, be64, short, ParseError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCapacity16 {
    /// Number of logical blocks (last LBA + 1).
    pub blocks: u64,
    pub block_size: u32,
    /// Logical blocks per physical block, as a power of two.
    pub blocks_per_physical_exp: u8,
}

impl ReadCapacity16 {
    pub fn parse(b: &[u8]) -> Result<ReadCapacity16, ParseError> {
        const WHAT: &str = "READ CAPACITY (16)";
        if b.len() < 14 {
            return Err(short(WHAT, 0, 14, b.len()));
        }
        let last = be64(b, 0, WHAT)?;
        let block_size = be32(b, 8, WHAT)?;
        if block_size == 0 || !block_size.is_power_of_two() || block_size > 1 << 20 {
            return Err(ParseError { what: WHAT, offset: 8, reason: format!("logical block size {block_size} is not a power of two up to 1 MiB") });
        }
        let blocks = last.checked_add(1).ok_or(ParseError { what: WHAT, offset: 0, reason: "last LBA overflows".into() })?;
        blocks.checked_mul(u64::from(block_size)).ok_or(ParseError { what: WHAT, offset: 0, reason: "capacity in bytes overflows".into() })?;
        Ok(ReadCapacity16 { blocks, block_size, blocks_per_physical_exp: b[13] & 0x0f })
    }

    pub fn size_bytes(&self) -> u64 {
        // Checked in parse.
        self.blocks.saturating_mul(u64::from(self.block_size))
    }

    pub fn physical_block_size(&self) -> u64 {
        u64::from(self.block_size) << self.blocks_per_physical_exp.min(16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let mut b = vec![0u8; 32];
        b[0..8].copy_from_slice(&(2_097_151u64).to_be_bytes());
        b[8..12].copy_from_slice(&512u32.to_be_bytes());
        b[13] = 3;
        let c = ReadCapacity16::parse(&b).unwrap();
        assert_eq!(c.size_bytes(), 1 << 30);
        assert_eq!(c.physical_block_size(), 4096);
        b[8..12].copy_from_slice(&0u32.to_be_bytes());
        assert!(ReadCapacity16::parse(&b).is_err());
        b[0..8].copy_from_slice(&u64::MAX.to_be_bytes());
        b[8..12].copy_from_slice(&512u32.to_be_bytes());
        assert!(ReadCapacity16::parse(&b).is_err());
    }
}
