//! LVM2: physical volumes found on partitions and whole disks, assembled
//! into volume groups, whose linear and striped logical volumes become
//! volumes. Everything else (thin pools and thin volumes, snapshots,
//! mirrors, RAID, cache, VDO, LVs stacked on LVs) is reported as unsupported
//! for that LV: reading them needs the metadata of that target, and a guess
//! would hand out wrong bytes.
//!
//! When several PVs carry copies of a VG's metadata, the copy with the
//! highest `seqno` wins, as in LVM.

pub(crate) mod label;
pub(crate) mod metadata;

use super::striped::{Segment, SegmentSource, Stripe};
use super::{crc32_update, Volume};
use crate::block::{ImageFile, ReadAt, SliceSource};
use crate::{Error, Result};
use label::PvLabel;
use metadata::Section;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// LVM's CRC: the IEEE polynomial, seeded with this value, no final xor.
const LVM_CRC_SEED: u32 = 0xf597_a6cf;

pub(crate) fn lvm_crc(data: &[u8]) -> u32 {
    crc32_update(LVM_CRC_SEED, data)
}

const SECTOR: u64 = 512;
/// Bounds against hostile metadata; real VGs are far below them.
const MAX_SEGMENTS: usize = 100_000;
const MAX_STRIPES: usize = 128;

/// A physical volume found on a partition or a whole disk.
pub(crate) struct PvCandidate {
    pub disk: usize,
    /// Byte offset of the PV on its disk.
    pub start_on_disk: u64,
    pub file: ImageFile,
    pub label: PvLabel,
}

#[derive(Default)]
pub(crate) struct Assembled {
    /// (disk index, volume)
    pub volumes: Vec<(usize, Volume)>,
    /// (disk index, volume id or "lvm", error)
    pub errors: Vec<(usize, String, Error)>,
}

/// Reads the PV label of `src`, if any.
pub(crate) fn probe(file: &ImageFile) -> Result<Option<PvLabel>> {
    let label = label::read_label(file)?;
    if let Some(l) = &label {
        if l.device_size > file.size() {
            // Areas past the end are caught per LV; say why up front.
            tracing::warn!("{}: LVM PV {} says it is {} bytes, but only {} are present", file.path.display(), l.uuid, l.device_size, file.size());
        }
    }
    Ok(label)
}

struct VgCopy {
    seqno: i64,
    name: String,
    vg: Section,
    /// Candidate index the copy was read from, and the text's offset there.
    from: usize,
    text_offset: u64,
}

/// Builds the logical volumes of every VG whose metadata is on `pvs`.
pub(crate) fn assemble(pvs: &[PvCandidate]) -> Assembled {
    let mut out = Assembled::default();
    let mut vgs: HashMap<String, VgCopy> = HashMap::new();
    // Metadata errors per PV uuid: only reported when no other PV gave a
    // usable copy of that PV's VG.
    let mut metadata_errors: Vec<(usize, Error)> = Vec::new();
    for (i, pv) in pvs.iter().enumerate() {
        for &area in &pv.label.metadata_areas {
            let text = match label::read_metadata(&pv.file, area) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    metadata_errors.push((i, e));
                    continue;
                }
            };
            let root = match metadata::parse(&text.text) {
                Ok(r) => r,
                Err(e) => {
                    metadata_errors.push((i, pv.file.corrupt("LVM metadata text", text.offset, e.to_string())));
                    continue;
                }
            };
            let Some((name, vg)) = root.sections().next() else {
                metadata_errors.push((i, pv.file.corrupt("LVM metadata text", text.offset, "no volume group section")));
                continue;
            };
            let Some(id) = vg.str("id") else {
                metadata_errors.push((i, pv.file.corrupt("LVM metadata text", text.offset, format!("volume group {name} has no id"))));
                continue;
            };
            let seqno = vg.int("seqno").unwrap_or(0);
            if vgs.get(id).is_none_or(|c| c.seqno < seqno) {
                vgs.insert(id.to_string(), VgCopy { seqno, name: name.to_string(), vg: vg.clone(), from: i, text_offset: text.offset });
            }
        }
    }
    let mut covered: HashSet<usize> = HashSet::new();
    let mut copies: Vec<VgCopy> = vgs.into_values().collect();
    copies.sort_by(|a, b| (a.from, &a.name).cmp(&(b.from, &b.name)));
    let mut names = HashSet::new();
    for copy in &copies {
        let src = &pvs[copy.from];
        if !names.insert(copy.name.clone()) {
            let e = src.file.corrupt("LVM metadata text", copy.text_offset, format!("a second volume group named {} (with another id) is present; it is ignored", copy.name));
            out.errors.push((src.disk, format!("lvm-{}", copy.name), e));
            continue;
        }
        covered.extend(assemble_vg(copy, pvs, &mut out));
    }
    for (i, e) in metadata_errors {
        if covered.contains(&i) {
            tracing::warn!("{e} (another copy of the volume group's metadata was used)");
        } else {
            out.errors.push((pvs[i].disk, "lvm".into(), e));
        }
    }
    out
}

/// A PV of the VG as its metadata describes it.
struct VgPv<'a> {
    uuid: String,
    pe_start: u64,
    found: Option<(usize, &'a PvCandidate)>,
}

/// Adds the LVs of one VG; returns the candidates that belong to it.
fn assemble_vg(copy: &VgCopy, pvs: &[PvCandidate], out: &mut Assembled) -> Vec<usize> {
    let src = &pvs[copy.from];
    let vg_name = &copy.name;
    let meta_err = |what: String| src.file.corrupt(&format!("LVM metadata of volume group {vg_name}"), copy.text_offset, what);
    let extent_size = match copy.vg.int("extent_size").and_then(|e| u64::try_from(e).ok()).filter(|&e| e > 0) {
        Some(e) => e * SECTOR,
        None => {
            out.errors.push((src.disk, format!("lvm-{vg_name}"), meta_err("missing or invalid extent_size".into())));
            return vec![copy.from];
        }
    };
    let mut vg_pvs: HashMap<&str, VgPv> = HashMap::new();
    let mut members = vec![copy.from];
    for (pv_name, pv) in copy.vg.section("physical_volumes").map(|s| s.sections().collect::<Vec<_>>()).unwrap_or_default() {
        let uuid = pv.str("id").unwrap_or_default().replace('-', "");
        let pe_start = pv.int("pe_start").and_then(|p| u64::try_from(p).ok()).unwrap_or(u64::MAX / SECTOR / 2);
        let found = pvs.iter().enumerate().find(|(_, c)| c.label.uuid == uuid);
        if let Some((i, _)) = found {
            members.push(i);
            if pvs.iter().filter(|c| c.label.uuid == uuid).count() > 1 {
                tracing::warn!("LVM PV {uuid} ({vg_name}/{pv_name}) is present on several disks; using {}", pvs[i].file.path.display());
            }
        }
        vg_pvs.insert(pv_name, VgPv { uuid: pv.str("id").unwrap_or_default().to_string(), pe_start: pe_start * SECTOR, found });
    }
    let lvs: Vec<(&str, &Section)> = copy.vg.section("logical_volumes").map(|s| s.sections().collect()).unwrap_or_default();
    // The COW store of an old-style snapshot is a visible LV whose bytes are
    // the exception store, not a filesystem: never hand it out.
    let mut cow_stores = HashSet::new();
    for (_, lv) in &lvs {
        for (_, seg) in lv.sections() {
            if seg.str("type") == Some("snapshot") {
                if let Some(c) = seg.str("cow_store") {
                    cow_stores.insert(c.to_string());
                }
            }
        }
    }
    for (lv_name, lv) in &lvs {
        if !lv.has_flag("status", "VISIBLE") {
            continue; // internal sub-LV (thin pool data, raid images, ...)
        }
        let id = format!("lvm-{vg_name}-{lv_name}");
        let lv_err = |what: String| src.file.corrupt(&format!("LVM metadata of logical volume {vg_name}/{lv_name}"), copy.text_offset, what);
        let lv_unsupported = |what: String| src.file.unsupported(&format!("logical volume {vg_name}/{lv_name}"), copy.text_offset, what);
        if cow_stores.contains(*lv_name) {
            out.errors.push((src.disk, id, lv_unsupported("it is the copy-on-write store of a snapshot; snapshots are not supported".into())));
            continue;
        }
        match build_lv(lv, extent_size, &vg_pvs, lvs.iter().map(|(n, _)| *n).collect()) {
            Ok((segments, first)) => {
                let (disk, start_on_disk) = first;
                let source: Arc<dyn ReadAt> = match segments.as_slice() {
                    [one] if one.stripes.len() == 1 => match one.stripes.first().and_then(|s| SliceSource::new(s.pv.clone(), s.offset, one.len)) {
                        Some(s) => Arc::new(s),
                        None => {
                            out.errors.push((src.disk, id, lv_err("segment lies beyond the end of its PV".into())));
                            continue;
                        }
                    },
                    _ => match SegmentSource::new(segments) {
                        Some(s) => Arc::new(s),
                        None => {
                            out.errors.push((src.disk, id, lv_err("segments do not cover the LV contiguously".into())));
                            continue;
                        }
                    },
                };
                out.volumes.push((
                    disk,
                    Volume {
                        id,
                        start: start_on_disk,
                        size: source.size(),
                        part_type: "lvm".into(),
                        name: Some(lv_name.to_string()),
                        uuid: lv.str("id").map(str::to_string),
                        source,
                    },
                ));
            }
            Err(LvError::Corrupt(what)) => out.errors.push((src.disk, id, lv_err(what))),
            Err(LvError::Unsupported(what)) => out.errors.push((src.disk, id, lv_unsupported(what))),
            Err(LvError::MissingPv { pv_name, uuid }) => out.errors.push((
                src.disk,
                id,
                lv_err(format!("needs physical volume {pv_name} (uuid {uuid}), which is on none of the VM's disks")),
            )),
        }
    }
    members
}

enum LvError {
    Corrupt(String),
    Unsupported(String),
    MissingPv { pv_name: String, uuid: String },
}

/// The LV's segments and the (disk, byte offset on disk) of its first byte.
fn build_lv(lv: &Section, extent_size: u64, vg_pvs: &HashMap<&str, VgPv>, lv_names: HashSet<&str>) -> Result<(Vec<Segment>, (usize, u64)), LvError> {
    use LvError::*;
    let mut segments = Vec::new();
    let mut first = None;
    let mut raw: Vec<(&str, &Section)> = lv.sections().filter(|(n, _)| n.starts_with("segment")).collect();
    if raw.is_empty() {
        return Err(Corrupt("no segments".into()));
    }
    if raw.len() > MAX_SEGMENTS {
        return Err(Corrupt(format!("more than {MAX_SEGMENTS} segments")));
    }
    let int = |s: &Section, k: &str, seg: &str| s.int(k).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| Corrupt(format!("{seg}: missing or invalid {k}")));
    let mut keyed = Vec::new();
    for (name, seg) in raw.drain(..) {
        keyed.push((int(seg, "start_extent", name)?, name, seg));
    }
    keyed.sort_by_key(|k| k.0);
    for (start_extent, seg_name, seg) in keyed {
        let kind = seg.str("type").unwrap_or("");
        if kind != "striped" {
            return Err(Unsupported(format!("{seg_name} has type {kind:?}; only linear and striped LVs are supported (not thin, snapshot, mirror, raid, cache)")));
        }
        let extent_count = int(seg, "extent_count", seg_name)?;
        let stripe_count = int(seg, "stripe_count", seg_name)?;
        let stripes = seg.array("stripes").ok_or_else(|| Corrupt(format!("{seg_name}: no stripes")))?;
        if stripe_count == 0 || stripe_count > MAX_STRIPES as u64 || stripes.len() as u64 != 2 * stripe_count {
            return Err(Corrupt(format!("{seg_name}: stripe_count {stripe_count} does not match its {} stripes entries", stripes.len())));
        }
        if extent_count == 0 || extent_count % stripe_count != 0 {
            return Err(Corrupt(format!("{seg_name}: extent_count {extent_count} is not a multiple of stripe_count {stripe_count}")));
        }
        let start = start_extent.checked_mul(extent_size).ok_or_else(|| Corrupt(format!("{seg_name}: start_extent too large")))?;
        let len = extent_count.checked_mul(extent_size).ok_or_else(|| Corrupt(format!("{seg_name}: extent_count too large")))?;
        let area_len = len / stripe_count;
        let stripe_size = if stripe_count > 1 {
            let s = int(seg, "stripe_size", seg_name)?.checked_mul(SECTOR).filter(|&s| s > 0 && area_len % s == 0);
            s.ok_or_else(|| Corrupt(format!("{seg_name}: stripe_size must divide each stripe's {area_len} bytes")))?
        } else {
            0
        };
        let mut areas = Vec::new();
        for pair in stripes.chunks_exact(2) {
            let [metadata::Value::Str(pv_name), metadata::Value::Int(pv_extent)] = pair else {
                return Err(Corrupt(format!("{seg_name}: stripes entry is not a (\"pvN\", extent) pair")));
            };
            let Some(pv) = vg_pvs.get(pv_name.as_str()) else {
                if lv_names.contains(pv_name.as_str()) {
                    return Err(Unsupported(format!("{seg_name} is stacked on logical volume {pv_name}")));
                }
                return Err(Corrupt(format!("{seg_name}: unknown physical volume {pv_name:?}")));
            };
            let Some((_, cand)) = pv.found else {
                return Err(MissingPv { pv_name: pv_name.clone(), uuid: pv.uuid.clone() });
            };
            let offset = u64::try_from(*pv_extent)
                .ok()
                .and_then(|e| e.checked_mul(extent_size))
                .and_then(|o| o.checked_add(pv.pe_start))
                .filter(|o| o.checked_add(area_len).is_some_and(|end| end <= cand.file.size()))
                .ok_or_else(|| Corrupt(format!("{seg_name}: area at extent {pv_extent} of {pv_name} lies beyond the end of the PV ({} bytes)", cand.file.size())))?;
            if first.is_none() {
                first = Some((cand.disk, cand.start_on_disk + offset));
            }
            areas.push(Stripe { pv: cand.file.src.clone(), offset });
        }
        segments.push(Segment { start, len, stripe_size, stripes: areas });
    }
    let mut next = 0;
    for s in &segments {
        if s.start != next {
            return Err(Corrupt(format!("segments leave a gap or overlap at byte {next} of the LV")));
        }
        next = s.start + s.len;
    }
    let first = first.ok_or_else(|| Corrupt("no segments".into()))?;
    Ok((segments, first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use crate::volume::find_volumes;

    const PV_SIZE: usize = 8 << 20;
    const MDA_START: usize = 4096;
    const MDA_SIZE: usize = (1 << 20) - 4096;

    /// A whole-disk PV with uuid `uuid` (32 chars) whose metadata area holds
    /// `text` at `text_at` (relative to the area; wraps past its end).
    fn pv(uuid: &str, text: &str, text_at: usize) -> Vec<u8> {
        let mut d = vec![0u8; PV_SIZE];
        let l = 512;
        d[l..l + 8].copy_from_slice(b"LABELONE");
        d[l + 8..l + 16].copy_from_slice(&1u64.to_le_bytes());
        d[l + 20..l + 24].copy_from_slice(&32u32.to_le_bytes());
        d[l + 24..l + 32].copy_from_slice(b"LVM2 001");
        d[l + 32..l + 64].copy_from_slice(uuid.as_bytes());
        d[l + 64..l + 72].copy_from_slice(&(PV_SIZE as u64).to_le_bytes());
        d[l + 72..l + 80].copy_from_slice(&(1u64 << 20).to_le_bytes()); // data area
        d[l + 104..l + 112].copy_from_slice(&(MDA_START as u64).to_le_bytes()); // metadata area
        d[l + 112..l + 120].copy_from_slice(&(MDA_SIZE as u64).to_le_bytes());
        let crc = lvm_crc(&d[l + 20..l + 512]);
        d[l + 16..l + 20].copy_from_slice(&crc.to_le_bytes());
        let h = MDA_START;
        d[h + 4..h + 20].copy_from_slice(b"\x20LVM2\x20x[5A%r0N*>");
        d[h + 20..h + 24].copy_from_slice(&1u32.to_le_bytes());
        d[h + 24..h + 32].copy_from_slice(&(MDA_START as u64).to_le_bytes());
        d[h + 32..h + 40].copy_from_slice(&(MDA_SIZE as u64).to_le_bytes());
        d[h + 40..h + 48].copy_from_slice(&(text_at as u64).to_le_bytes());
        d[h + 48..h + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        d[h + 56..h + 60].copy_from_slice(&lvm_crc(text.as_bytes()).to_le_bytes());
        let crc = lvm_crc(&d[h + 4..h + 512]);
        d[h..h + 4].copy_from_slice(&crc.to_le_bytes());
        for (i, b) in text.bytes().enumerate() {
            let mut at = text_at + i;
            if at >= MDA_SIZE {
                at = at - MDA_SIZE + 512;
            }
            d[MDA_START + at] = b;
        }
        d
    }

    const UUID: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn lv(name: &str, status: &str, segments: &str) -> String {
        format!("{name} {{\nid = \"{name}-id\"\nstatus = [{status}]\nsegment_count = 1\n{segments}\n}}\n")
    }

    fn seg(n: u32, start: u32, count: u64, body: &str) -> String {
        format!("segment{n} {{\nstart_extent = {start}\nextent_count = {count}\n{body}\n}}\n")
    }

    fn vg(lvs: &str) -> String {
        format!(
            "vg {{\nid = \"vg-id\"\nseqno = 4\nextent_size = 8\nphysical_volumes {{\npv0 {{\nid = \"AAAAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAAAA\"\npe_start = 2048\npe_count = 1000\n}}\n}}\nlogical_volumes {{\n{lvs}}}\n}}\ncontents = \"Text Format Volume Group\"\nversion = 1\n"
        )
    }

    fn volumes(d: Vec<u8>) -> (Vec<String>, Vec<String>) {
        let disk: Arc<dyn ReadAt> = Arc::new(MemSource(d));
        let v = find_volumes(&[disk]).unwrap();
        (v[0].volumes.iter().map(|v| v.id.clone()).collect(), v[0].errors.iter().map(|(id, e)| format!("{id}: {e}")).collect())
    }

    const LINEAR: &str = "type = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 3]";

    #[test]
    fn linear_lv_maps_extents_after_pe_start() {
        let text = vg(&lv("ok", "\"READ\", \"VISIBLE\"", &seg(1, 0, 2, LINEAR)));
        let mut d = pv(UUID, &text, 512);
        let at = 2048 * 512 + 3 * 8 * 512;
        d[at] = 0x5a;
        d[at + 8191] = 0xa5;
        let disk: Arc<dyn ReadAt> = Arc::new(MemSource(d));
        let v = find_volumes(&[disk]).unwrap();
        let ok = &v[0].volumes[0];
        assert_eq!((ok.id.as_str(), ok.size, ok.start), ("lvm-vg-ok", 8192, at as u64));
        let mut b = [0u8; 8192];
        ok.source.read_exact_at(&mut b, 0).unwrap();
        assert_eq!((b[0], b[8191]), (0x5a, 0xa5));
    }

    #[test]
    fn wrapped_metadata_text_is_read() {
        let text = vg(&lv("ok", "\"VISIBLE\"", &seg(1, 0, 2, LINEAR)));
        let (ids, errs) = volumes(pv(UUID, &text, MDA_SIZE - 100));
        assert_eq!(ids, ["lvm-vg-ok"], "{errs:?}");
    }

    #[test]
    fn unsupported_lv_types_are_errors_never_guessed() {
        let lvs = [
            lv("ok", "\"VISIBLE\"", &seg(1, 0, 2, LINEAR)),
            lv("th", "\"VISIBLE\"", &seg(1, 0, 2, "type = \"thin\"\nthin_pool = \"pool\"\ndevice_id = 1")),
            lv("mir", "\"VISIBLE\"", &seg(1, 0, 2, "type = \"raid1\"\ndevice_count = 2")),
            lv("snap", "\"VISIBLE\"", &seg(1, 0, 2, "type = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 10]")),
            lv("snapshot0", "\"READ\"", &seg(1, 0, 2, "type = \"snapshot\"\nchunk_size = 8\norigin = \"ok\"\ncow_store = \"snap\"")),
            lv("stacked", "\"VISIBLE\"", &seg(1, 0, 2, "type = \"striped\"\nstripe_count = 1\nstripes = [\"ok\", 0]")),
            lv("hidden", "\"READ\"", &seg(1, 0, 2, LINEAR)),
        ]
        .concat();
        let (ids, errs) = volumes(pv(UUID, &vg(&lvs), 512));
        assert_eq!(ids, ["lvm-vg-ok"]);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("lvm-vg-th: ") && errs[0].contains("unsupported") && errs[0].contains("\"thin\""), "{errs:?}");
        assert!(errs[1].starts_with("lvm-vg-mir: ") && errs[1].contains("\"raid1\""), "{errs:?}");
        assert!(errs[2].starts_with("lvm-vg-snap: ") && errs[2].contains("copy-on-write store of a snapshot"), "{errs:?}");
        assert!(errs[3].starts_with("lvm-vg-stacked: ") && errs[3].contains("stacked on logical volume ok"), "{errs:?}");
    }

    #[test]
    fn hostile_segments_are_errors() {
        let lvs = [
            lv("past", "\"VISIBLE\"", &seg(1, 0, 2, "type = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 100000]")),
            lv("gap", "\"VISIBLE\"", &seg(1, 1, 2, LINEAR)),
            lv("count", "\"VISIBLE\"", &seg(1, 0, 2, "type = \"striped\"\nstripe_count = 2\nstripe_size = 8\nstripes = [\"pv0\", 0]")),
            lv("chunk", "\"VISIBLE\"", &seg(1, 0, 2, "type = \"striped\"\nstripe_count = 2\nstripe_size = 3\nstripes = [\"pv0\", 0, \"pv0\", 5]")),
            lv("neg", "\"VISIBLE\"", &seg(1, 0, 2, "type = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", -1]")),
            lv("huge", "\"VISIBLE\"", &seg(1, 0, 9223372036854775807, LINEAR)),
        ]
        .concat();
        let (ids, errs) = volumes(pv(UUID, &vg(&lvs), 512));
        assert!(ids.is_empty(), "{ids:?}");
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(errs[0].contains("beyond the end of the PV"), "{errs:?}");
        assert!(errs[1].contains("gap"), "{errs:?}");
    }

    #[test]
    fn metadata_checksum_and_garbage() {
        let text = vg(&lv("ok", "\"VISIBLE\"", &seg(1, 0, 2, LINEAR)));
        let mut d = pv(UUID, &text, 512);
        d[MDA_START + 520] ^= 1;
        let (ids, errs) = volumes(d);
        assert!(ids.is_empty());
        assert!(errs[0].starts_with("lvm: disk0: LVM metadata text at offset 4608: metadata checksum mismatch"), "{errs:?}");
        let (_, errs) = volumes(pv(UUID, "vg { id = \"x\" seqno = [", 512));
        assert!(errs[0].contains("LVM metadata text") && errs[0].contains("expected a value"), "{errs:?}");
    }
}
