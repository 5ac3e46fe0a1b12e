//! A SCSI disk's identity as the device itself states it, asked through
//! SG_IO with the read-only command set: standard INQUIRY, VPD pages 0x80
//! (unit serial) and 0x83 (device identification), READ CAPACITY (16).
//! This is the product's own source of identity; sysfs's cached copies
//! are a cross-check and the fallback when SG_IO is not possible.

use crate::sys;
use anyhow::{bail, Context, Result};
use scsi::{Designator, ReadCapacity16, ReadOnlyCommand, Sense, StandardInquiry};
use std::fs::File;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ScsiIdentity {
    pub inquiry: StandardInquiry,
    pub serial: Option<String>,
    pub designators: Vec<Designator>,
    pub capacity: Option<ReadCapacity16>,
}

/// Sends one command, retrying once after a unit attention (a reset or
/// a LUN inventory change reported on the first command after it).
fn command(file: &File, cmd: ReadOnlyCommand) -> Result<Vec<u8>> {
    for attempt in 0..2 {
        let r = sys::sg_io(file, cmd, 512, TIMEOUT).with_context(|| format!("SG_IO {}", cmd.name()))?;
        if r.ok() {
            return Ok(r.data);
        }
        let sense = Sense::parse(&r.sense);
        if attempt == 0 && sense.is_some_and(|s| s.is_unit_attention()) {
            continue;
        }
        match sense {
            Some(s) => bail!("{}: status {:#04x}, sense {s}", cmd.name(), r.status),
            None => bail!("{}: status {:#04x}, host status {:#x}, driver status {:#x}", cmd.name(), r.status, r.host_status, r.driver_status),
        }
    }
    bail!("{}: unit attention twice", cmd.name())
}

/// Queries a SCSI disk. INQUIRY must work; the VPD pages and the capacity
/// are optional (not every device has them).
pub fn query(file: &File) -> Result<ScsiIdentity> {
    let inq = command(file, ReadOnlyCommand::Inquiry { alloc: 96 })?;
    let inquiry = StandardInquiry::parse(&inq)?;
    let pages = command(file, ReadOnlyCommand::InquiryVpd { page: 0x00, alloc: 255 })
        .ok()
        .and_then(|b| scsi::parse_supported_pages(&b).ok())
        .unwrap_or_default();
    let serial = if pages.contains(&0x80) {
        command(file, ReadOnlyCommand::InquiryVpd { page: 0x80, alloc: 255 }).ok().and_then(|b| scsi::parse_unit_serial(&b).ok()).filter(|s| !s.is_empty())
    } else {
        None
    };
    let designators = if pages.contains(&0x83) {
        let b = command(file, ReadOnlyCommand::InquiryVpd { page: 0x83, alloc: 4096 })?;
        scsi::parse_device_identification(&b)?
    } else {
        Vec::new()
    };
    let capacity = command(file, ReadOnlyCommand::ReadCapacity16 { alloc: 32 }).ok().and_then(|b| ReadCapacity16::parse(&b).ok());
    Ok(ScsiIdentity { inquiry, serial, designators, capacity })
}
