//! VMDK text descriptors: the small text file (or the text embedded in a
//! hosted sparse extent) that says what a disk is made of.
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=c1450df7
//! parentCID=ffffffff
//! createType="monolithicFlat"
//! RW 4505600 FLAT "disk-flat.vmdk" 0
//! ddb.geometry.cylinders = "4469"
//! ```
//!
//! Parsing is purely textual; nothing here opens a file.

/// Largest descriptor accepted (text file or embedded): real ones are a few
/// hundred bytes; anything bigger is not a descriptor.
pub const MAX_DESCRIPTOR_BYTES: usize = 1 << 20;

/// Most extents accepted in one descriptor. twoGbMaxExtent* disks of the
/// largest VMDK size (62 TiB) have ~31,000 extents.
pub const MAX_EXTENTS: usize = 65_536;

/// `parentCID` value meaning "no parent".
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// Whether the start of a file looks like a VMDK text descriptor.
pub fn looks_like_descriptor(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.contains("# Disk DescriptorFile") || (text.contains("createType") && text.contains("version="))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    /// The extent must not be read (VMware uses it for regions that belong
    /// to someone else). Reading it is an error, not zeros.
    NoAccess,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// Plain data (hosted `FLAT`, ESX `VMFS`).
    Flat,
    /// Reads as zeros; no file.
    Zero,
    /// Hosted sparse (`KDMV`) or, on ESX, `COWD` (`SPARSE`, `VMFSSPARSE`).
    Sparse,
    /// ESX 5+ space-efficient sparse.
    SeSparse,
    /// Raw device mapping: the data lives on another LUN.
    RawDevice,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    /// 1-based line number in the descriptor, for error messages.
    pub line: usize,
    pub access: Access,
    pub sectors: u64,
    pub kind: ExtentKind,
    /// The type keyword as written (`FLAT`, `VMFS`, ...).
    pub type_name: String,
    /// File name as written (empty for ZERO).
    pub file: String,
    /// Start of the data in the file, in sectors (flat extents only).
    pub offset_sectors: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub version: Option<u32>,
    pub cid: Option<u32>,
    pub parent_cid: Option<u32>,
    pub create_type: String,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` entries (geometry, adapter, uuid, longContentID...), in order.
    pub ddb: Vec<(String, String)>,
}

impl Descriptor {
    /// The parent CID, `None` when the disk has no parent (`ffffffff` or absent).
    pub fn parent_cid(&self) -> Option<u32> {
        self.parent_cid.filter(|&c| c != NO_PARENT_CID)
    }

    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

/// A descriptor problem: the 1-based line (0 = whole text) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

fn err(line: usize, reason: impl Into<String>) -> ParseError {
    ParseError { line, reason: reason.into() }
}

/// Removes one pair of surrounding double quotes.
fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v)
}

fn parse_hex_u32(line: usize, key: &str, v: &str) -> Result<u32, ParseError> {
    u32::from_str_radix(unquote(v), 16).map_err(|_| err(line, format!("{key} {v:?} is not a 32-bit hex number")))
}

/// Parses descriptor text. Embedded descriptors are NUL-padded: the text
/// ends at the first NUL.
pub fn parse(bytes: &[u8]) -> Result<Descriptor, ParseError> {
    if bytes.len() > MAX_DESCRIPTOR_BYTES {
        return Err(err(0, format!("descriptor of {} bytes is larger than the {MAX_DESCRIPTOR_BYTES} accepted", bytes.len())));
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(bytes.get(..end).unwrap_or(&[]))
        .map_err(|e| err(0, format!("descriptor is not UTF-8 text (byte {})", e.valid_up_to())))?;
    let mut d = Descriptor::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(kind) = extent_access(line) {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(err(n, format!("more than {MAX_EXTENTS} extents")));
            }
            d.extents.push(parse_extent(n, kind, line)?);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(n, format!("cannot parse {line:?}")));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.starts_with("ddb.") {
            d.ddb.push((key.to_owned(), unquote(value).to_owned()));
            continue;
        }
        match key {
            "version" => {
                d.version = Some(unquote(value).parse().map_err(|_| err(n, format!("version {value:?} is not a number")))?)
            }
            "CID" => d.cid = Some(parse_hex_u32(n, key, value)?),
            "parentCID" => d.parent_cid = Some(parse_hex_u32(n, key, value)?),
            "createType" => d.create_type = unquote(value).to_owned(),
            "parentFileNameHint" => {
                let hint = unquote(value);
                if !hint.is_empty() {
                    d.parent_hint = Some(hint.to_owned());
                }
            }
            // Other header keys (encoding, isNativeSnapshot, changeTrackPath...)
            // do not change how data is read.
            _ => {}
        }
    }
    if d.create_type.is_empty() {
        return Err(err(0, "no createType"));
    }
    Ok(d)
}

fn extent_access(line: &str) -> Option<Access> {
    let word = line.split_ascii_whitespace().next()?;
    match word {
        "RW" => Some(Access::ReadWrite),
        "RDONLY" => Some(Access::ReadOnly),
        "NOACCESS" => Some(Access::NoAccess),
        _ => None,
    }
}

/// `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
fn parse_extent(n: usize, access: Access, line: &str) -> Result<ExtentLine, ParseError> {
    let mut rest = line;
    let mut word = || -> Option<&str> {
        let t = rest.trim_start();
        let end = t.find(|c: char| c.is_ascii_whitespace()).unwrap_or(t.len());
        let (w, r) = t.split_at(end);
        rest = r;
        (!w.is_empty()).then_some(w)
    };
    let _access = word();
    let sectors_s = word().ok_or_else(|| err(n, "extent line without a size"))?;
    let type_name = word().ok_or_else(|| err(n, "extent line without a type"))?.to_owned();
    let sectors: u64 = sectors_s.parse().map_err(|_| err(n, format!("extent size {sectors_s:?} is not a number")))?;
    if sectors == 0 {
        return Err(err(n, "extent of 0 sectors"));
    }
    let kind = match type_name.as_str() {
        "FLAT" | "VMFS" => ExtentKind::Flat,
        "ZERO" => ExtentKind::Zero,
        "SPARSE" | "VMFSSPARSE" => ExtentKind::Sparse,
        "SESPARSE" => ExtentKind::SeSparse,
        "VMFSRDM" | "VMFSRAW" => ExtentKind::RawDevice,
        other => return Err(err(n, format!("unknown extent type {other:?}"))),
    };
    // The file name is quoted and may contain spaces.
    let t = rest.trim_start();
    let (file, after) = if let Some(q) = t.strip_prefix('"') {
        let close = q.find('"').ok_or_else(|| err(n, "unterminated file name"))?;
        (q.get(..close).unwrap_or(""), q.get(close + 1..).unwrap_or(""))
    } else if t.is_empty() {
        ("", "")
    } else {
        // Unquoted name (tolerated): up to the next space.
        let end = t.find(|c: char| c.is_ascii_whitespace()).unwrap_or(t.len());
        t.split_at(end)
    };
    if file.is_empty() && kind != ExtentKind::Zero {
        return Err(err(n, format!("{type_name} extent without a file name")));
    }
    let after = after.trim();
    let offset_sectors = if after.is_empty() {
        0
    } else {
        let w = after.split_ascii_whitespace().next().unwrap_or("");
        let off: u64 = w.parse().map_err(|_| err(n, format!("extent offset {w:?} is not a number")))?;
        if kind != ExtentKind::Flat && off != 0 {
            return Err(err(n, format!("offset {off} on a {type_name} extent (only flat extents have one)")));
        }
        off
    };
    Ok(ExtentLine { line: n, access, sectors, kind, type_name, file: file.to_owned(), offset_sectors })
}

/// Why a createType cannot be read, `None` when it can.
pub fn refused_create_type(create_type: &str) -> Option<&'static str> {
    match create_type {
        "fullDevice" | "partitionedDevice" => Some("the disk is a physical host device (raw disk access); its data is not in image files"),
        "vmfsRaw" | "vmfsRDM" | "vmfsRDMP" | "vmfsPassthroughRawDeviceMap" | "vmfsRawDeviceMap" => {
            Some("raw device mapping: the data lives on another LUN, not in this datastore; back up the LUN itself")
        }
        _ => None,
    }
}

/// createTypes this reader knows. Others are refused: a new type may mean a
/// layout we would misread.
pub fn known_create_type(create_type: &str) -> bool {
    matches!(
        create_type,
        "monolithicFlat"
            | "monolithicSparse"
            | "twoGbMaxExtentFlat"
            | "twoGbMaxExtentSparse"
            | "vmfs"
            | "vmfsThin"
            | "vmfsPreallocated"
            | "vmfsEagerZeroedThick"
            | "vmfsThick"
            | "vmfsSparse"
            | "vmfsThinAny"
            | "seSparse"
            | "streamOptimized"
            | "custom"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_descriptor_with_crlf_comments_and_ddb() {
        let text = "# Disk DescriptorFile\r\nversion=1\r\nCID=c1450df7\r\nparentCID=ffffffff\r\n\r\ncreateType=\"monolithicFlat\"\r\n# Extent description\r\nRW 4505600 FLAT \"my disk-flat.vmdk\" 0\r\n\r\nddb.geometry.cylinders = \"4469\"\r\nddb.uuid = \"60 00\"\r\n";
        let d = parse(text.as_bytes()).unwrap();
        assert_eq!(d.version, Some(1));
        assert_eq!(d.cid, Some(0xc145_0df7));
        assert_eq!(d.parent_cid(), None);
        assert_eq!(d.create_type, "monolithicFlat");
        assert_eq!(d.extents.len(), 1);
        let e = &d.extents[0];
        assert_eq!((e.access, e.sectors, e.kind, e.file.as_str(), e.offset_sectors), (Access::ReadWrite, 4505600, ExtentKind::Flat, "my disk-flat.vmdk", 0));
        assert_eq!(d.ddb("ddb.geometry.cylinders"), Some("4469"));
        assert_eq!(d.ddb("ddb.uuid"), Some("60 00"));
    }

    #[test]
    fn parses_mixed_extents_and_parent() {
        let text = "version=1\nCID=00000002\nparentCID=0000000a\ncreateType=\"custom\"\nparentFileNameHint=\"..\\\\base.vmdk\"\nRDONLY 100 FLAT \"a.raw\" 2048\nNOACCESS 50 ZERO\nRW 200 SPARSE \"s.vmdk\"\nRW 8 VMFSRDM \"rdm.vmdk\"\n";
        let d = parse(text.as_bytes()).unwrap();
        assert_eq!(d.parent_cid(), Some(10));
        assert_eq!(d.parent_hint.as_deref(), Some("..\\\\base.vmdk"));
        let k: Vec<_> = d.extents.iter().map(|e| (e.access, e.kind, e.offset_sectors)).collect();
        assert_eq!(
            k,
            vec![
                (Access::ReadOnly, ExtentKind::Flat, 2048),
                (Access::NoAccess, ExtentKind::Zero, 0),
                (Access::ReadWrite, ExtentKind::Sparse, 0),
                (Access::ReadWrite, ExtentKind::RawDevice, 0)
            ]
        );
    }

    #[test]
    fn embedded_descriptor_stops_at_nul() {
        let mut b = b"version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n".to_vec();
        b.extend_from_slice(&[0; 100]);
        b.extend_from_slice(b"garbage");
        assert_eq!(parse(&b).unwrap().create_type, "monolithicSparse");
    }

    #[test]
    fn rejects_bad_lines() {
        for bad in [
            "createType=\"vmfs\"\nRW x FLAT \"a\" 0\n",
            "createType=\"vmfs\"\nRW 0 FLAT \"a\" 0\n",
            "createType=\"vmfs\"\nRW 10 TAPE \"a\"\n",
            "createType=\"vmfs\"\nRW 10 FLAT\n",
            "createType=\"vmfs\"\nRW 10 FLAT \"a\n",
            "createType=\"vmfs\"\nRW 10 SPARSE \"a\" 5\n",
            "createType=\"vmfs\"\nCID=zz\n",
            "version=1\n",
            "createType=\"vmfs\"\nthis is not a descriptor\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&vec![b'#'; MAX_DESCRIPTOR_BYTES + 1]).is_err());
    }

    #[test]
    fn refuses_device_types() {
        assert!(refused_create_type("vmfsRDM").is_some());
        assert!(refused_create_type("fullDevice").is_some());
        assert!(refused_create_type("vmfs").is_none());
    }
}
