//! One file as the reader sees it: the base MFT record plus every extension
//! record its $ATTRIBUTE_LIST names, with attribute extents merged into
//! streams, and the $STANDARD_INFORMATION / $FILE_NAME values decoded.

use super::record::*;
use crate::fs::Timestamp;
use crate::le::{u16le, u32le, u64le};

/// Windows file attribute bits ($STANDARD_INFORMATION / $FILE_NAME).
pub const FILE_ATTR_SYSTEM: u32 = 0x0004;
pub const FILE_ATTR_REPARSE_POINT: u32 = 0x0400;
pub const FILE_ATTR_ENCRYPTED: u32 = 0x4000;
/// Set in $FILE_NAME (and index keys) of directories.
pub const FILE_NAME_IS_DIRECTORY: u32 = 0x1000_0000;

pub const NAMESPACE_DOS: u8 = 2;

#[derive(Clone, Debug)]
pub enum StreamData {
    Resident(Vec<u8>),
    NonResident {
        runs: Vec<Run>,
        data_size: u64,
        initialized_size: u64,
        /// log2 clusters per compression unit; 0 when not compressed.
        compression_unit: u8,
    },
}

/// A whole attribute value: all extents of one (type, name) merged.
#[derive(Clone, Debug)]
pub struct Stream {
    pub name: Vec<u16>,
    pub flags: u16,
    pub data: StreamData,
    /// Volume offset of the first extent's header, for errors.
    pub offset: u64,
}

impl Stream {
    pub fn size(&self) -> u64 {
        match &self.data {
            StreamData::Resident(v) => v.len() as u64,
            StreamData::NonResident { data_size, .. } => *data_size,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FileName {
    pub parent: u64,
    pub namespace: u8,
    pub name: Vec<u16>,
    pub flags: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct StdInfo {
    pub created: Timestamp,
    pub modified: Timestamp,
    pub mft_changed: Timestamp,
    pub accessed: Timestamp,
    pub attributes: u32,
}

// Some fields are kept for diagnostics (Debug) only.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct Node {
    pub record: u64,
    pub is_dir: bool,
    pub link_count: u16,
    pub names: Vec<FileName>,
    pub std_info: StdInfo,
    pub data: Vec<Stream>,
    pub reparse: Option<Stream>,
    pub index_root: Option<Vec<u8>>,
    pub index_allocation: Option<Stream>,
    pub index_bitmap: Option<Stream>,
    /// An $EFS logged utility stream: the file is EFS-encrypted.
    pub efs: bool,
}

/// NTFS time (100 ns ticks since 1601-01-01 UTC) to Unix time.
pub fn ntfs_time(ticks: u64) -> Timestamp {
    const EPOCH_DIFF: i128 = 116_444_736_000_000_000;
    let t = i128::from(ticks) - EPOCH_DIFF;
    let secs = t.div_euclid(10_000_000);
    let rem = t.rem_euclid(10_000_000);
    Timestamp { secs: secs as i64, nanos: (rem * 100) as u32 }
}

impl Node {
    /// Builds a node from its records' attributes (base record first).
    /// Errors are plain strings; the caller names the record.
    pub fn build(base: &MftRecord, attrs: Vec<Attribute>) -> Result<Node, (u64, String)> {
        let mut node = Node {
            record: base.number,
            is_dir: base.flags & RECORD_IS_DIRECTORY != 0,
            link_count: base.link_count,
            names: Vec::new(),
            std_info: StdInfo::default(),
            data: Vec::new(),
            reparse: None,
            index_root: None,
            index_allocation: None,
            index_bitmap: None,
            efs: false,
        };
        let i30: Vec<u16> = "$I30".encode_utf16().collect();
        let efs: Vec<u16> = "$EFS".encode_utf16().collect();
        // Group extents by (type, name), keeping first-seen order.
        let mut groups: Vec<((u32, Vec<u16>), Vec<Attribute>)> = Vec::new();
        for a in attrs {
            let key = (a.ty, a.name.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(a),
                None => groups.push((key, vec![a])),
            }
        }
        for ((ty, name), extents) in groups {
            let first = &extents[0];
            match ty {
                ATTR_STANDARD_INFORMATION => {
                    let AttrBody::Resident(v) = &first.body else {
                        return Err((first.offset, "$STANDARD_INFORMATION is not resident".into()));
                    };
                    if v.len() < 0x24 {
                        return Err((first.offset, "$STANDARD_INFORMATION too short".into()));
                    }
                    node.std_info = StdInfo {
                        created: ntfs_time(u64le(v, 0)),
                        modified: ntfs_time(u64le(v, 8)),
                        mft_changed: ntfs_time(u64le(v, 16)),
                        accessed: ntfs_time(u64le(v, 24)),
                        attributes: u32le(v, 32),
                    };
                }
                ATTR_FILE_NAME => {
                    for a in &extents {
                        if let AttrBody::Resident(v) = &a.body {
                            if let Some(f) = parse_file_name(v) {
                                node.names.push(f);
                            }
                        }
                    }
                }
                ATTR_DATA | ATTR_REPARSE_POINT | ATTR_INDEX_ALLOCATION | ATTR_BITMAP => {
                    let s = merge_extents(&name, extents)?;
                    match ty {
                        ATTR_DATA => node.data.push(s),
                        ATTR_REPARSE_POINT => node.reparse = Some(s),
                        ATTR_INDEX_ALLOCATION if name == i30 => node.index_allocation = Some(s),
                        ATTR_BITMAP if name == i30 => node.index_bitmap = Some(s),
                        _ => {}
                    }
                }
                ATTR_INDEX_ROOT if name == i30 => {
                    if let AttrBody::Resident(v) = &first.body {
                        node.index_root = Some(v.clone());
                    }
                }
                ATTR_LOGGED_UTILITY_STREAM if name == efs => node.efs = true,
                _ => {}
            }
        }
        Ok(node)
    }

    /// The unnamed $DATA stream.
    pub fn main_stream(&self) -> Option<&Stream> {
        self.data.iter().find(|s| s.name.is_empty())
    }

    /// Names a directory walk shows: every name but DOS-only 8.3 aliases.
    pub fn visible_names(&self) -> impl Iterator<Item = &FileName> {
        self.names.iter().filter(|n| n.namespace != NAMESPACE_DOS)
    }
}

pub fn parse_file_name(v: &[u8]) -> Option<FileName> {
    if v.len() < 66 {
        return None;
    }
    let len = usize::from(v[64]);
    let name = v.get(66..66 + 2 * len)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    Some(FileName { parent: u64le(v, 0) & 0x0000_FFFF_FFFF_FFFF, namespace: v[65], name, flags: u32le(v, 56) })
}

/// Joins the extents of one non-resident attribute (sorted by start VCN,
/// each starting where the previous ended) into one run list.
fn merge_extents(name: &[u16], mut extents: Vec<Attribute>) -> Result<Stream, (u64, String)> {
    let offset = extents[0].offset;
    if extents.len() == 1 {
        if let AttrBody::Resident(v) = &extents[0].body {
            return Ok(Stream { name: name.to_vec(), flags: extents[0].flags, data: StreamData::Resident(v.clone()), offset });
        }
    }
    extents.sort_by_key(|a| match &a.body {
        AttrBody::NonResident { start_vcn, .. } => *start_vcn,
        AttrBody::Resident(_) => 0,
    });
    let mut runs = Vec::new();
    let mut next_vcn = 0u64;
    let mut sizes = None;
    let mut flags = 0;
    for a in &extents {
        let AttrBody::NonResident { start_vcn, last_vcn, runs: r, compression_unit, data_size, initialized_size, .. } = &a.body else {
            return Err((a.offset, "resident attribute among non-resident extents".into()));
        };
        if *start_vcn != next_vcn {
            return Err((a.offset, format!("attribute extent starts at VCN {start_vcn}, expected {next_vcn}")));
        }
        if *start_vcn == 0 {
            sizes = Some((*data_size, *initialized_size, *compression_unit));
            flags = a.flags;
        }
        let end = r.last().map_or(*start_vcn, |x| x.vcn + x.len);
        // An empty attribute has last_vcn = -1 (u64::MAX) and no runs.
        if end != last_vcn.wrapping_add(1) && !(r.is_empty() && *last_vcn == u64::MAX) {
            return Err((a.offset, format!("data runs end at VCN {end} but the attribute says {}", last_vcn.wrapping_add(1))));
        }
        runs.extend_from_slice(r);
        next_vcn = end;
    }
    let (data_size, initialized_size, compression_unit) = sizes.ok_or((offset, "no extent starts at VCN 0".to_string()))?;
    Ok(Stream {
        name: name.to_vec(),
        flags,
        data: StreamData::NonResident { runs, data_size, initialized_size: initialized_size.min(data_size), compression_unit },
        offset,
    })
}

/// Entries of an $ATTRIBUTE_LIST value: the record numbers it references.
pub fn attribute_list_records(v: &[u8]) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 0x1A <= v.len() {
        let len = usize::from(u16le(v, pos + 4));
        if len < 0x1A {
            return Err(format!("attribute list entry at {pos} has invalid length {len}"));
        }
        let rec = u64le(v, pos + 0x10) & 0x0000_FFFF_FFFF_FFFF;
        if !out.contains(&rec) {
            out.push(rec);
        }
        pos += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_from_1601() {
        assert_eq!(ntfs_time(116_444_736_000_000_000), Timestamp { secs: 0, nanos: 0 });
        assert_eq!(ntfs_time(116_444_736_000_000_000 + 12_345_678), Timestamp { secs: 1, nanos: 234_567_800 });
        assert_eq!(ntfs_time(116_444_736_000_000_000 - 1), Timestamp { secs: -1, nanos: 999_999_900 });
    }
}
