//! Vital product data pages: 0x00 (supported pages), 0x80 (unit serial
//! number) and 0x83 (device identification, SPC-4 7.8.6).
//!
//! The identifiers a cluster knows a LUN by (`naa.600140...`, `eui.`,
//! `t10.`) come from page 0x83; [`Designator::id`] renders them the way
//! ESXi's `esxcli storage core device list` and Linux's `/dev/disk/by-id`
//! (`wwn-0x...`) do, so inventories compare as strings.

use crate::{ascii_field, be16, short, ParseError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesignatorType {
    VendorSpecific,
    T10VendorId,
    Eui64,
    Naa,
    RelativeTargetPort,
    TargetPortGroup,
    LogicalUnitGroup,
    Md5LogicalUnit,
    ScsiNameString,
    ProtocolSpecificPort,
    Uuid,
    Reserved(u8),
}

impl DesignatorType {
    fn from_code(c: u8) -> DesignatorType {
        match c {
            0 => DesignatorType::VendorSpecific,
            1 => DesignatorType::T10VendorId,
            2 => DesignatorType::Eui64,
            3 => DesignatorType::Naa,
            4 => DesignatorType::RelativeTargetPort,
            5 => DesignatorType::TargetPortGroup,
            6 => DesignatorType::LogicalUnitGroup,
            7 => DesignatorType::Md5LogicalUnit,
            8 => DesignatorType::ScsiNameString,
            9 => DesignatorType::ProtocolSpecificPort,
            0xa => DesignatorType::Uuid,
            other => DesignatorType::Reserved(other),
        }
    }

    /// Stable lower-case name used in `--json` output.
    pub fn name(&self) -> &'static str {
        match self {
            DesignatorType::VendorSpecific => "vendor",
            DesignatorType::T10VendorId => "t10",
            DesignatorType::Eui64 => "eui64",
            DesignatorType::Naa => "naa",
            DesignatorType::RelativeTargetPort => "relative-target-port",
            DesignatorType::TargetPortGroup => "target-port-group",
            DesignatorType::LogicalUnitGroup => "lu-group",
            DesignatorType::Md5LogicalUnit => "md5",
            DesignatorType::ScsiNameString => "scsi-name",
            DesignatorType::ProtocolSpecificPort => "protocol-port",
            DesignatorType::Uuid => "uuid",
            DesignatorType::Reserved(_) => "reserved",
        }
    }
}

/// What a designator names: the logical unit itself, the port it was
/// reached through, or the target device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Association {
    LogicalUnit,
    TargetPort,
    TargetDevice,
    Reserved,
}

impl Association {
    pub fn name(&self) -> &'static str {
        match self {
            Association::LogicalUnit => "lun",
            Association::TargetPort => "target-port",
            Association::TargetDevice => "target",
            Association::Reserved => "reserved",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSet {
    Binary,
    Ascii,
    Utf8,
    Reserved(u8),
}

/// One identification descriptor of VPD page 0x83.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Designator {
    pub kind: DesignatorType,
    pub association: Association,
    pub code_set: CodeSet,
    /// Protocol identifier, when the PIV bit says it is valid.
    pub protocol: Option<u8>,
    pub value: Vec<u8>,
}

impl Designator {
    /// The designator as text: `naa.<hex>`, `eui.<hex>`, `t10.<ascii>`,
    /// the SCSI name string itself, or `<type>.<hex>` otherwise.
    pub fn id(&self) -> String {
        let hex: String = self.value.iter().map(|b| format!("{b:02x}")).collect();
        let text = || match self.code_set {
            CodeSet::Ascii | CodeSet::Utf8 => ascii_field(&self.value),
            _ => hex.clone(),
        };
        match self.kind {
            DesignatorType::Naa => format!("naa.{hex}"),
            DesignatorType::Eui64 => format!("eui.{hex}"),
            DesignatorType::T10VendorId => format!("t10.{}", text()),
            DesignatorType::ScsiNameString => text(),
            DesignatorType::RelativeTargetPort | DesignatorType::TargetPortGroup | DesignatorType::LogicalUnitGroup => {
                // Two-byte numbers in the last bytes.
                let n = self.value.iter().rev().take(2).rev().fold(0u32, |a, &b| (a << 8) | u32::from(b));
                format!("{}.{n}", self.kind.name())
            }
            _ => format!("{}.{}", self.kind.name(), text()),
        }
    }
}

/// Page codes listed by VPD page 0x00.
pub fn parse_supported_pages(b: &[u8]) -> Result<Vec<u8>, ParseError> {
    const WHAT: &str = "VPD page 0x00";
    let len = usize::from(be16(b, 2, WHAT)?);
    Ok(b.iter().skip(4).take(len).copied().collect())
}

/// The unit serial number of VPD page 0x80 (trimmed ASCII).
pub fn parse_unit_serial(b: &[u8]) -> Result<String, ParseError> {
    const WHAT: &str = "VPD page 0x80";
    check_page(b, 0x80, WHAT)?;
    let len = usize::from(be16(b, 2, WHAT)?);
    let end = (4 + len).min(b.len());
    Ok(ascii_field(&b[4..end]))
}

/// The identification descriptors of VPD page 0x83, in page order.
pub fn parse_device_identification(b: &[u8]) -> Result<Vec<Designator>, ParseError> {
    const WHAT: &str = "VPD page 0x83";
    check_page(b, 0x83, WHAT)?;
    let len = usize::from(be16(b, 2, WHAT)?);
    let end = 4 + len;
    if b.len() < end {
        return Err(short(WHAT, 2, end, b.len()));
    }
    let mut out = Vec::new();
    let mut at = 4;
    while at < end {
        let head = b.get(at..at + 4).filter(|_| at + 4 <= end).ok_or_else(|| short(WHAT, at, at + 4, end))?;
        let dlen = usize::from(head[3]);
        let value = b.get(at + 4..at + 4 + dlen).filter(|_| at + 4 + dlen <= end).ok_or_else(|| ParseError {
            what: WHAT,
            offset: at,
            reason: format!("designator of {dlen} bytes runs past the page end ({end})"),
        })?;
        let code_set = match head[0] & 0x0f {
            1 => CodeSet::Binary,
            2 => CodeSet::Ascii,
            3 => CodeSet::Utf8,
            c => CodeSet::Reserved(c),
        };
        let association = match (head[1] >> 4) & 0x03 {
            0 => Association::LogicalUnit,
            1 => Association::TargetPort,
            2 => Association::TargetDevice,
            _ => Association::Reserved,
        };
        out.push(Designator {
            kind: DesignatorType::from_code(head[1] & 0x0f),
            association,
            code_set,
            protocol: (head[1] & 0x80 != 0).then_some(head[0] >> 4),
            value: value.to_vec(),
        });
        at += 4 + dlen;
    }
    Ok(out)
}

/// The identifier a cluster inventory uses for a LUN: the first NAA
/// designator of the logical unit, else EUI-64, else T10 vendor id, else
/// SCSI name string (ESXi's own preference order).
///
/// Among NAA designators the globally unique formats win over the locally
/// assigned one: IEEE Registered Extended (6), IEEE Registered (5), IEEE
/// Extended (2), then Locally Assigned (3). tgtd, for one, reports a
/// locally assigned NAA before its registered-extended one, and ESXi names
/// such a LUN by the latter.
pub fn preferred_id(designators: &[Designator]) -> Option<String> {
    let lu = |d: &&Designator| d.association == Association::LogicalUnit;
    let naa_rank = |d: &&Designator| match d.value.first().map(|b| b >> 4) {
        Some(6) => 0,
        Some(5) => 1,
        Some(2) => 2,
        Some(3) => 3,
        _ => 4,
    };
    if let Some(naa) = designators.iter().filter(lu).filter(|d| d.kind == DesignatorType::Naa).min_by_key(naa_rank) {
        return Some(naa.id());
    }
    [DesignatorType::Eui64, DesignatorType::T10VendorId, DesignatorType::ScsiNameString]
        .into_iter()
        .find_map(|k| designators.iter().filter(lu).find(|d| d.kind == k))
        .map(Designator::id)
}

fn check_page(b: &[u8], page: u8, what: &'static str) -> Result<(), ParseError> {
    match b.get(1) {
        Some(&p) if p == page => Ok(()),
        Some(&p) => Err(ParseError { what, offset: 1, reason: format!("page code {p:#04x}, expected {page:#04x}") }),
        None => Err(short(what, 0, 4, b.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page83(descs: &[(u8, u8, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for &(b0, b1, v) in descs {
            body.extend_from_slice(&[b0, b1, 0, v.len() as u8]);
            body.extend_from_slice(v);
        }
        let mut p = vec![0, 0x83];
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn device_identification_as_tgtd_sends_it() {
        let naa = [0x60, 0x01, 0x40, 0x51, 0x23, 0x45, 0x67, 0x89, 0, 0, 0, 0, 0, 0, 0, 1];
        let p = page83(&[(0x02, 0x01, b"IET     VIRTUAL-DISK"), (0x01, 0x03, &naa), (0x53, 0xa8, b"iqn.2026-11.test:t1,t,0x1\0\0\0")]);
        let d = parse_device_identification(&p).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].id(), "t10.IET     VIRTUAL-DISK");
        assert_eq!(d[1].id(), "naa.60014051234567890000000000000001");
        assert_eq!(d[2].association, Association::TargetDevice);
        assert_eq!(d[2].id(), "iqn.2026-11.test:t1,t,0x1");
        assert_eq!(preferred_id(&d).as_deref(), Some("naa.60014051234567890000000000000001"));
    }

    #[test]
    fn registered_naa_wins_over_locally_assigned() {
        let local = [0x30, 0, 0, 0x01, 0, 0, 0, 0x03];
        let registered = [0x60, 0, 0, 0, 0, 0, 0, 0, 0x0e, 0, 0, 0, 0, 0x01, 0, 0x03];
        let p = page83(&[(0x01, 0x03, &local), (0x01, 0x03, &registered)]);
        let d = parse_device_identification(&p).unwrap();
        assert_eq!(preferred_id(&d).as_deref(), Some("naa.60000000000000000e00000000010003"));
    }

    #[test]
    fn hostile_lengths_are_errors() {
        let mut p = page83(&[(0x01, 0x03, &[1, 2, 3, 4, 5, 6, 7, 8])]);
        p[7] = 200; // designator longer than the page
        assert!(parse_device_identification(&p).is_err());
        let mut p = page83(&[]);
        p[3] = 50; // page longer than the response
        assert!(parse_device_identification(&p).is_err());
        assert!(parse_device_identification(&[0, 0x80, 0, 0]).is_err());
        assert_eq!(parse_unit_serial(&[0, 0x80, 0, 40, b'a', b'b', b' ']).unwrap(), "ab");
    }
}
