//! REPORT LUNS parameter data (SPC-4 6.33) and LUN encoding (SAM-5 4.7).

use crate::{be32, ParseError};

/// Most LUNs a report is trusted to hold (the SAM limit is 16384 for flat
/// addressing; anything larger is a hostile length field).
const MAX_LUNS: usize = 65_536;

/// LUN numbers in the order reported. Addressing methods 00b (peripheral)
/// and 01b (flat space) decode to the number an administrator sees; others
/// are skipped, since no SAN vbproxy reads uses them.
pub fn parse_report_luns(b: &[u8]) -> Result<Vec<u64>, ParseError> {
    const WHAT: &str = "REPORT LUNS";
    let len = be32(b, 0, WHAT)? as usize;
    let entries = (len / 8).min(MAX_LUNS);
    let mut out = Vec::with_capacity(entries.min(b.len() / 8));
    for i in 0..entries {
        let at = 8 + i * 8;
        // A truncated report (allocation length too small) lists what fits.
        let Some(e) = b.get(at..at + 8) else { break };
        if let Some(l) = decode_lun(e) {
            out.push(l);
        }
    }
    Ok(out)
}

/// The LUN number of an 8-byte LUN field.
pub fn decode_lun(e: &[u8]) -> Option<u64> {
    let b0 = *e.first()?;
    let b1 = *e.get(1)?;
    match b0 >> 6 {
        0 if b0 & 0x3f == 0 => Some(u64::from(b1)),
        1 => Some((u64::from(b0 & 0x3f) << 8) | u64::from(b1)),
        _ => None,
    }
}

/// The 8-byte LUN field for a LUN number: peripheral addressing below 256,
/// flat space addressing up to 16383 (as Linux and ESXi send it).
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut e = [0u8; 8];
    if lun < 256 {
        e[1] = lun as u8;
    } else {
        let l = lun.min(0x3fff);
        e[0] = 0x40 | (l >> 8) as u8;
        e[1] = (l & 0xff) as u8;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_lies() {
        for l in [0u64, 1, 7, 255, 256, 1000, 16383] {
            assert_eq!(decode_lun(&encode_lun(l)), Some(l));
        }
        let mut b = vec![0u8; 8];
        b[0..4].copy_from_slice(&0xffff_fff8u32.to_be_bytes());
        b.extend_from_slice(&encode_lun(3));
        b.extend_from_slice(&encode_lun(300));
        assert_eq!(parse_report_luns(&b).unwrap(), vec![3, 300]);
        assert!(parse_report_luns(&[0, 0]).is_err());
    }
}
