//! A remote LUN as a [`guestfs::block::ReadAt`]: blocking positional reads
//! served by READ(16) commands, several in flight, on a runtime the LUN
//! owns. Unaligned reads read whole blocks and copy the asked-for bytes.

use crate::session::{Session, SessionConfig};
use crate::url::{Auth, IscsiUrl, Portal};
use crate::{discovery, Error, Limits, Result};
use guestfs::block::ReadAt;
use scsi::{ReadCapacity16, ReadOnlyCommand, StandardInquiry};
use std::io;
use std::sync::Arc;
use tokio::runtime::Runtime;

fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("iscsi")
        .enable_all()
        .build()
        .map_err(|e| Error::Io(io::Error::other(format!("cannot start the iSCSI runtime: {e}"))))
}

/// An open remote LUN.
pub struct IscsiLun {
    rt: Runtime,
    session: Arc<Session>,
    url: IscsiUrl,
    lun: u64,
    size: u64,
    block_size: u32,
    capacity: ReadCapacity16,
    /// Bytes per READ(16).
    chunk: u64,
}

impl IscsiLun {
    /// Logs in to the URL's target and reads the LUN's capacity.
    pub fn open(url: &IscsiUrl, limits: Limits) -> Result<IscsiLun> {
        let rt = runtime()?;
        let cfg = SessionConfig { portal: url.portal.clone(), target: url.target.clone(), auth: url.auth.clone(), limits };
        let lun = url.lun;
        let (session, capacity, burst) = rt.block_on(async {
            let s = Session::open(cfg).await?;
            let cap = read_capacity(&s, lun).await?;
            let burst = s.max_burst().await;
            Ok::<_, Error>((s, cap, burst))
        })?;
        let bs = u64::from(capacity.block_size);
        // A READ at most MaxBurstLength long (one Data-In sequence), whole blocks.
        let chunk = (u64::from(burst) / bs).max(1) * bs;
        Ok(IscsiLun {
            rt,
            session: Arc::new(session),
            url: url.clone(),
            lun,
            size: capacity.size_bytes(),
            block_size: capacity.block_size,
            capacity,
            chunk,
        })
    }

    pub fn url(&self) -> &IscsiUrl {
        &self.url
    }
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    pub fn capacity(&self) -> ReadCapacity16 {
        self.capacity
    }

    /// Runs any read-only command on this LUN (INQUIRY, VPD pages...).
    pub fn command(&self, cmd: ReadOnlyCommand) -> Result<Vec<u8>> {
        let s = Arc::clone(&self.session);
        let (lun, bs) = (self.lun, self.block_size);
        self.rt.block_on(async move { s.execute(lun, cmd, bs).await })
    }

    /// Reads whole blocks `[lba, lba + len/bs)` into `out` (len a multiple
    /// of the block size), `queue_depth` READ(16) in flight.
    fn read_blocks(&self, out: &mut [u8], lba: u64) -> Result<()> {
        let bs = u64::from(self.block_size);
        let depth = self.session.config().limits.queue_depth.max(1);
        let session = Arc::clone(&self.session);
        let chunk = self.chunk;
        let (lun, block_size) = (self.lun, self.block_size);
        self.rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            let total = out.len() as u64;
            let mut next = 0u64;
            let mut done = 0u64;
            while done < total {
                while next < total && set.len() < depth {
                    let n = chunk.min(total - next);
                    let blocks = u32::try_from(n / bs).map_err(|_| Error::Protocol("READ too long".into()))?;
                    let s = Arc::clone(&session);
                    let start = next;
                    let cmd = ReadOnlyCommand::Read16 { lba: lba + start / bs, blocks };
                    set.spawn(async move { (start, s.execute(lun, cmd, block_size).await) });
                    next += n;
                }
                let Some(joined) = set.join_next().await else { break };
                let (start, data) = joined.map_err(|e| Error::Io(io::Error::other(format!("iSCSI read task failed: {e}"))))?;
                let data = data?;
                let s = usize::try_from(start).map_err(|_| Error::Protocol("offset".into()))?;
                let dst = out.get_mut(s..s + data.len()).ok_or_else(|| Error::Protocol("READ returned more than asked".into()))?;
                dst.copy_from_slice(&data);
                done += data.len() as u64;
            }
            Ok(())
        })
    }
}

impl Drop for IscsiLun {
    fn drop(&mut self) {
        let s = Arc::clone(&self.session);
        let _ = self.rt.block_on(async move { tokio::time::timeout(std::time::Duration::from_secs(1), s.logout()).await });
    }
}

fn io_err(url: &IscsiUrl, offset: u64, e: Error) -> io::Error {
    let kind = match &e {
        Error::Timeout { .. } => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{url}, byte offset {offset}: {e}"))
}

impl ReadAt for IscsiLun {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let len = buf.len() as u64;
        let end = offset.checked_add(len).filter(|&e| e <= self.size).ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, format!("{}: read of {len} bytes at {offset} runs past the end ({} bytes)", self.url, self.size))
        })?;
        if len == 0 {
            return Ok(());
        }
        let bs = u64::from(self.block_size);
        let first = offset / bs;
        let last = end.div_ceil(bs);
        if offset % bs == 0 && len % bs == 0 {
            return self.read_blocks(buf, first).map_err(|e| io_err(&self.url, offset, e));
        }
        // Unaligned: read the covering blocks, copy the middle.
        let span = usize::try_from((last - first) * bs).map_err(|_| io::Error::other("read too large"))?;
        let mut tmp = vec![0u8; span];
        self.read_blocks(&mut tmp, first).map_err(|e| io_err(&self.url, offset, e))?;
        let skip = (offset - first * bs) as usize;
        buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }
}

async fn read_capacity(s: &Session, lun: u64) -> Result<ReadCapacity16> {
    let b = s.execute(lun, ReadOnlyCommand::ReadCapacity16 { alloc: 32 }, 512).await?;
    ReadCapacity16::parse(&b).map_err(|e| Error::Scsi { command: "READ CAPACITY (16)", lun, detail: e.to_string() })
}

/// What a portal reports about one of its LUNs.
#[derive(Debug, Clone)]
pub struct RemoteLun {
    pub target: String,
    pub lun: u64,
    pub inquiry: StandardInquiry,
    pub serial: Option<String>,
    pub designators: Vec<scsi::Designator>,
    pub capacity: ReadCapacity16,
}

/// Every disk LUN of every target a portal offers: discovery, then per
/// target REPORT LUNS, and per LUN INQUIRY, VPD 0x80/0x83 and READ
/// CAPACITY(16). Blocking.
pub fn probe_portal(portal: &Portal, auth: Option<&Auth>, limits: Limits) -> Result<Vec<RemoteLun>> {
    let rt = runtime()?;
    rt.block_on(async {
        let targets = discovery::discover(portal, auth, &limits).await?;
        let mut out = Vec::new();
        for t in targets {
            let cfg = SessionConfig { portal: portal.clone(), target: t.name.clone(), auth: auth.cloned(), limits: limits.clone() };
            let s = Session::open(cfg).await?;
            let report = s.execute(0, ReadOnlyCommand::ReportLuns { alloc: 16384 }, 512).await?;
            let luns = scsi::parse_report_luns(&report).map_err(|e| Error::Scsi { command: "REPORT LUNS", lun: 0, detail: e.to_string() })?;
            for lun in luns {
                let scsi_err = |command: &'static str, e: scsi::ParseError| Error::Scsi { command, lun, detail: e.to_string() };
                let inq = s.execute(lun, ReadOnlyCommand::Inquiry { alloc: 96 }, 512).await?;
                let inquiry = StandardInquiry::parse(&inq).map_err(|e| scsi_err("INQUIRY", e))?;
                if !inquiry.is_present_disk() {
                    // tgtd's LUN 0 controller, tapes, ...: not a disk to read.
                    continue;
                }
                let pages = s.execute(lun, ReadOnlyCommand::InquiryVpd { page: 0x00, alloc: 255 }, 512).await.ok();
                let pages = pages.and_then(|p| scsi::parse_supported_pages(&p).ok()).unwrap_or_default();
                let serial = if pages.contains(&0x80) {
                    let b = s.execute(lun, ReadOnlyCommand::InquiryVpd { page: 0x80, alloc: 255 }, 512).await?;
                    Some(scsi::parse_unit_serial(&b).map_err(|e| scsi_err("INQUIRY (VPD 0x80)", e))?)
                } else {
                    None
                };
                let designators = if pages.contains(&0x83) {
                    let b = s.execute(lun, ReadOnlyCommand::InquiryVpd { page: 0x83, alloc: 4096 }, 512).await?;
                    scsi::parse_device_identification(&b).map_err(|e| scsi_err("INQUIRY (VPD 0x83)", e))?
                } else {
                    Vec::new()
                };
                let capacity = read_capacity(&s, lun).await?;
                out.push(RemoteLun { target: t.name.clone(), lun, inquiry, serial, designators, capacity });
            }
            s.logout().await;
        }
        Ok(out)
    })
}
