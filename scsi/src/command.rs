//! The only commands vbproxy sends. Adding a member here is a safety
//! decision: the enum must stay free of anything that writes (WRITE, WRITE
//! SAME, UNMAP, FORMAT UNIT, MODE SELECT, PERSISTENT RESERVE OUT, SYNCHRONIZE
//! CACHE is harmless but unneeded, ...). A unit test checks every opcode.

/// A command that cannot change a LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnlyCommand {
    TestUnitReady,
    /// Standard INQUIRY data.
    Inquiry { alloc: u16 },
    /// A vital product data page (0x00 supported pages, 0x80 unit serial,
    /// 0x83 device identification).
    InquiryVpd { page: u8, alloc: u16 },
    ReadCapacity16 { alloc: u32 },
    /// REPORT LUNS, select report 0x00 (all logical units).
    ReportLuns { alloc: u32 },
    /// READ(16) of `blocks` logical blocks from `lba`.
    Read16 { lba: u64, blocks: u32 },
}

impl ReadOnlyCommand {
    /// The command descriptor block.
    pub fn cdb(&self) -> Vec<u8> {
        match *self {
            ReadOnlyCommand::TestUnitReady => vec![0x00, 0, 0, 0, 0, 0],
            ReadOnlyCommand::Inquiry { alloc } => {
                let a = alloc.to_be_bytes();
                vec![0x12, 0, 0, a[0], a[1], 0]
            }
            ReadOnlyCommand::InquiryVpd { page, alloc } => {
                let a = alloc.to_be_bytes();
                vec![0x12, 0x01, page, a[0], a[1], 0]
            }
            ReadOnlyCommand::ReadCapacity16 { alloc } => {
                let mut c = vec![0u8; 16];
                c[0] = 0x9e;
                c[1] = 0x10; // service action READ CAPACITY (16)
                c[10..14].copy_from_slice(&alloc.to_be_bytes());
                c
            }
            ReadOnlyCommand::ReportLuns { alloc } => {
                let mut c = vec![0u8; 12];
                c[0] = 0xa0;
                c[6..10].copy_from_slice(&alloc.to_be_bytes());
                c
            }
            ReadOnlyCommand::Read16 { lba, blocks } => {
                let mut c = vec![0u8; 16];
                c[0] = 0x88;
                c[2..10].copy_from_slice(&lba.to_be_bytes());
                c[10..14].copy_from_slice(&blocks.to_be_bytes());
                c
            }
        }
    }

    /// Bytes the target may return (the data-in buffer size).
    /// `block_size` is the LUN's logical block size (for READ).
    pub fn data_in_len(&self, block_size: u32) -> u64 {
        match *self {
            ReadOnlyCommand::TestUnitReady => 0,
            ReadOnlyCommand::Inquiry { alloc } | ReadOnlyCommand::InquiryVpd { alloc, .. } => u64::from(alloc),
            ReadOnlyCommand::ReadCapacity16 { alloc } | ReadOnlyCommand::ReportLuns { alloc } => u64::from(alloc),
            ReadOnlyCommand::Read16 { blocks, .. } => u64::from(blocks) * u64::from(block_size),
        }
    }

    /// A name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            ReadOnlyCommand::TestUnitReady => "TEST UNIT READY",
            ReadOnlyCommand::Inquiry { .. } => "INQUIRY",
            ReadOnlyCommand::InquiryVpd { .. } => "INQUIRY (VPD)",
            ReadOnlyCommand::ReadCapacity16 { .. } => "READ CAPACITY (16)",
            ReadOnlyCommand::ReportLuns { .. } => "REPORT LUNS",
            ReadOnlyCommand::Read16 { .. } => "READ (16)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opcodes of SPC/SBC commands that read or inquire only.
    const READ_ONLY_OPCODES: [u8; 6] = [0x00, 0x12, 0x9e, 0xa0, 0x88, 0x12];

    #[test]
    fn every_command_has_a_read_only_opcode() {
        let all = [
            ReadOnlyCommand::TestUnitReady,
            ReadOnlyCommand::Inquiry { alloc: 96 },
            ReadOnlyCommand::InquiryVpd { page: 0x83, alloc: 255 },
            ReadOnlyCommand::ReadCapacity16 { alloc: 32 },
            ReadOnlyCommand::ReportLuns { alloc: 4096 },
            ReadOnlyCommand::Read16 { lba: 1 << 40, blocks: 8 },
        ];
        for c in all {
            let cdb = c.cdb();
            assert!(READ_ONLY_OPCODES.contains(&cdb[0]), "{c:?}");
            assert!(matches!(cdb.len(), 6 | 10 | 12 | 16));
        }
    }

    #[test]
    fn read16_encodes_lba_and_length_big_endian() {
        let c = ReadOnlyCommand::Read16 { lba: 0x0102_0304_0506_0708, blocks: 0x0a0b_0c0d }.cdb();
        assert_eq!(&c[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&c[10..14], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(ReadOnlyCommand::Read16 { lba: 0, blocks: 8 }.data_in_len(4096), 32768);
    }
}
