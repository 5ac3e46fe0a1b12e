//! Opening SOURCE arguments as one guest tree, and helpers the file-level
//! commands share.

use anyhow::{bail, Context, Result};
use guestfs::disk::Disk;
use guestfs::block::ReadAt;
use guestfs::fs::{FileKind, Stat};
use guestfs::tree::GuestTree;
use guestfs::volume::DiskSource;
use std::path::PathBuf;
use std::sync::Arc;

/// Opens every source with its snapshot chain, named as in the guest
/// tree: images `disk0`, `disk1`... in order; the disks of a `.vmx` by
/// controller slot (`scsi0-0`), its skipped disks named on stderr.
pub fn open_disks(sources: &[PathBuf]) -> Result<Vec<(String, Disk)>> {
    open_disks_named(sources, &[])
}

/// As [`open_disks`], with the disks of plain (non-`.vmx`) sources named
/// `names[i]` instead of `diskN`: backup jobs mount a snapshot's
/// descriptors and keep the VM's slot names (`scsi0-0`) in the tree.
pub fn open_disks_named(sources: &[PathBuf], names: &[String]) -> Result<Vec<(String, Disk)>> {
    if !names.is_empty() {
        if names.len() != sources.len() {
            bail!("--disk-names gives {} names for {} sources", names.len(), sources.len());
        }
        if let Some(bad) = names.iter().find(|n| n.is_empty() || *n == "." || *n == ".." || n.contains('/') || n.contains('\0')) {
            bail!("--disk-names: {bad:?} is not a usable directory name");
        }
    }
    let mut out: Vec<(String, Disk)> = Vec::new();
    let mut images = 0;
    for s in sources {
        if crate::source::is_vmx(s) {
            let vm = crate::vm::load_vm(&s.to_string_lossy())?;
            for (slot, reason) in &vm.skipped {
                eprintln!("vbproxy: {}: {slot}: {reason}", vm.vmx);
            }
            if vm.disks.is_empty() {
                bail!("{}: the VM has no disk to back up", vm.vmx);
            }
            for d in &vm.disks {
                let disk = crate::source::open(std::path::Path::new(&d.spec)).with_context(|| format!("{}: disk {}", vm.vmx, d.slot))?;
                out.push((d.slot.clone(), disk));
            }
        } else {
            let name = names.get(out.len()).cloned().unwrap_or_else(|| format!("disk{images}"));
            out.push((name, crate::source::open(s)?));
            images += 1;
        }
    }
    let mut names: Vec<&str> = out.iter().map(|d| d.0.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("two disks would both be named {} in the guest tree: give one VM at a time", w[0]);
    }
    Ok(out)
}

/// Opens every source as one guest tree (see [`open_disks`] for the names).
pub fn open_tree(sources: &[PathBuf]) -> Result<GuestTree> {
    open_tree_named(sources, &[])
}

/// As [`open_tree`], naming plain sources' disks (see [`open_disks_named`]).
pub fn open_tree_named(sources: &[PathBuf], names: &[String]) -> Result<GuestTree> {
    let disks = open_disks_named(sources, names)?.into_iter().map(|(n, d)| (n, Arc::new(DiskSource(d)) as Arc<dyn ReadAt>)).collect();
    Ok(GuestTree::open(disks)?)
}

/// Splits `SOURCE... PATH [DEST]` positional arguments.
pub fn split_args(mut args: Vec<String>, tail: usize) -> Result<(Vec<PathBuf>, Vec<String>), String> {
    if args.len() < tail + 1 {
        return Err(format!("expected at least one SOURCE and {tail} more argument(s)"));
    }
    let rest = args.split_off(args.len() - tail);
    Ok((args.into_iter().map(PathBuf::from).collect(), rest))
}

pub fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        _ => "other",
    }
}

/// `drwxr-xr-x` style mode string.
pub fn mode_string(st: &Stat) -> String {
    let t = match st.kind {
        FileKind::File => '-',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    };
    let m = st.mode;
    let mut s = String::from(t);
    for (shift, special, ch) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (m & special != 0, x) {
            (true, true) => ch,
            (true, false) => ch.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) from Unix seconds.
pub fn utc_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm, public domain).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A guest name for messages: control characters escaped so a hostile
/// name cannot drive the admin's terminal.
pub fn printable(name: &[u8]) -> String {
    String::from_utf8_lossy(name).chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_matches_known_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_time(-1), "1969-12-31 23:59:59");
    }
}
