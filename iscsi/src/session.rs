//! One iSCSI session over one TCP connection: commands are sent under the
//! CmdSN window the target grants (MaxCmdSN), a reader task dispatches
//! responses by Initiator Task Tag, Data-In PDUs are placed in order into
//! each command's buffer (a gap, an overlap or a PDU past the expected
//! transfer length is a protocol error: a missing piece is never zeros),
//! and NOP-In pings are answered.
//!
//! When the connection is lost or a command times out, the connection is
//! dropped, a new one logs in (bounded attempts, backoff doubling), and the
//! command is sent again: every command this session can send only reads,
//! so re-issuing is always safe.

use crate::login::{connect_and_login, LoggedIn, LoginTarget, Negotiated, OUR_MAX_RECV};
use crate::pdu::{self, op, DataIn, Pdu, ScsiResponse, Seq, NO_TAG};
use crate::url::{Auth, Portal};
use crate::{Error, Limits, Result};
use scsi::{ReadOnlyCommand, Sense};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Largest data-in buffer one command may ask for (bounds allocation).
const MAX_TRANSFER: u64 = 64 << 20;
/// Unit attentions cleared by retrying before giving up.
const MAX_UNIT_ATTENTIONS: u32 = 10;

const STATUS_GOOD: u8 = 0x00;
const STATUS_CHECK_CONDITION: u8 = 0x02;
const STATUS_BUSY: u8 = 0x08;
const STATUS_TASK_SET_FULL: u8 = 0x28;

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub portal: Portal,
    pub target: String,
    pub auth: Option<Auth>,
    pub limits: Limits,
}

/// How a command ended at the target.
#[derive(Debug)]
pub struct Completion {
    pub status: u8,
    pub sense: Option<Sense>,
    /// The data-in bytes received (in order, without gaps).
    pub data: Vec<u8>,
}

struct Pending {
    buf: Vec<u8>,
    got: usize,
    tx: oneshot::Sender<Result<Completion>>,
}

struct Writer {
    half: OwnedWriteHalf,
    cmd_sn: u32,
}

/// A logged-in connection and its reader task.
struct Conn {
    writer: tokio::sync::Mutex<Writer>,
    exp_stat_sn: AtomicU32,
    max_cmd_sn: AtomicU32,
    window: Notify,
    pending: Mutex<HashMap<u32, Pending>>,
    dead: AtomicBool,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    params: Negotiated,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(h) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

/// `a <= b` in 32-bit serial number arithmetic (RFC 1982).
fn serial_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

impl Conn {
    fn seq(&self, cmd_sn: u32) -> Seq {
        Seq { cmd_sn, exp_stat_sn: self.exp_stat_sn.load(Ordering::Acquire) }
    }

    fn note_sn(&self, p: &Pdu, advances_stat_sn: bool) {
        if advances_stat_sn {
            self.exp_stat_sn.store(p.stat_sn().wrapping_add(1), Ordering::Release);
        }
        let new = p.max_cmd_sn();
        let cur = self.max_cmd_sn.load(Ordering::Acquire);
        if new != cur && serial_le(cur, new) {
            self.max_cmd_sn.store(new, Ordering::Release);
            self.window.notify_waiters();
        }
    }

    fn complete(&self, itt: u32, r: Result<Completion>) {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&itt);
        if let Some(p) = p {
            let _ = p.tx.send(r);
        }
    }

    /// Marks the connection unusable and fails every command in flight.
    fn kill(&self, why: &str) {
        self.dead.store(true, Ordering::Release);
        self.window.notify_waiters();
        let drained: Vec<Pending> = self.pending.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, p)| p).collect();
        for p in drained {
            let _ = p.tx.send(Err(Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why.to_string()))));
        }
    }

    /// Handles one PDU from the target; an error ends the connection.
    fn dispatch(self: &Arc<Self>, p: Pdu) -> Result<()> {
        match p.opcode() {
            op::DATA_IN => {
                let d = DataIn::parse(&p);
                self.note_sn(&p, d.has_status);
                let itt = p.itt();
                let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let Some(pend) = map.get_mut(&itt) else {
                    return Err(Error::Protocol(format!("Data-In for unknown task tag {itt:#x}")));
                };
                let off = usize::try_from(d.buffer_offset).unwrap_or(usize::MAX);
                let end = off.checked_add(p.data.len()).filter(|&e| e <= pend.buf.len());
                let Some(end) = end.filter(|_| off == pend.got) else {
                    return Err(Error::Protocol(format!(
                        "Data-In for task {itt:#x}: {} bytes at buffer offset {off}, expected offset {} within {} bytes",
                        p.data.len(),
                        pend.got,
                        pend.buf.len()
                    )));
                };
                if let Some(dst) = pend.buf.get_mut(off..end) {
                    dst.copy_from_slice(&p.data);
                }
                pend.got = end;
                drop(map);
                if d.has_status {
                    self.finish(itt, d.status, None);
                }
            }
            op::SCSI_RESPONSE => {
                self.note_sn(&p, true);
                let r = ScsiResponse::parse(&p);
                if r.response != 0 {
                    self.complete(p.itt(), Err(Error::Protocol(format!("target failed the command (iSCSI response {:#04x})", r.response))));
                } else {
                    self.finish(p.itt(), r.status, pdu::response_sense(&p.data));
                }
            }
            op::NOP_IN => {
                self.note_sn(&p, p.itt() != NO_TAG);
                if p.ttt() != NO_TAG {
                    // A ping from the target: answer so it keeps the session.
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        let mut w = me.writer.lock().await;
                        let reply = pdu::nop_out_reply(&p, me.seq(w.cmd_sn));
                        let ok = match reply.encode() {
                            Ok(b) => w.half.write_all(&b).await.is_ok(),
                            Err(_) => false,
                        };
                        drop(w);
                        if !ok {
                            me.kill("cannot answer the target's NOP-In");
                        }
                    });
                }
            }
            op::ASYNC_MESSAGE => {
                self.note_sn(&p, true);
                let event = p.bhs.get(36).copied().unwrap_or(0);
                if event != 0 {
                    return Err(Error::Protocol(format!("target asked to end the connection (async event {event})")));
                }
            }
            op::REJECT => {
                let reason = p.bhs[2];
                let itt = p.data.get(16..20).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(NO_TAG);
                self.complete(itt, Err(Error::Protocol(format!("target rejected a PDU (reason {reason:#04x})"))));
            }
            op::R2T => return Err(Error::Protocol("target asked for write data (R2T); this initiator never writes".into())),
            op::LOGOUT_RESPONSE => return Err(Error::Protocol("target logged the connection out".into())),
            other => return Err(Error::Protocol(format!("unexpected PDU opcode {other:#04x}"))),
        }
        Ok(())
    }

    fn finish(&self, itt: u32, status: u8, sense: Option<Sense>) {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&itt);
        if let Some(mut p) = p {
            p.buf.truncate(p.got);
            let _ = p.tx.send(Ok(Completion { status, sense, data: p.buf }));
        }
    }

    /// Sends a command and waits for its completion until `deadline`.
    async fn submit(&self, itt: u32, lun: u64, cmd: &ReadOnlyCommand, block_size: u32, deadline: Instant, secs: u64) -> Result<Completion> {
        let expected = cmd.data_in_len(block_size);
        if expected > MAX_TRANSFER {
            return Err(Error::Protocol(format!("{} of {expected} bytes is larger than one command may transfer", cmd.name())));
        }
        let (tx, rx) = oneshot::channel();
        let buf = vec![0u8; usize::try_from(expected).unwrap_or(0)];
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(itt, Pending { buf, got: 0, tx });
        let timeout = || Error::Timeout { what: format!("{} on LUN {lun}", cmd.name()), secs };
        loop {
            if self.dead.load(Ordering::Acquire) {
                self.complete(itt, Err(Error::Protocol("connection closed".into())));
                return Err(Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection closed")));
            }
            let notified = self.window.notified();
            {
                let mut w = self.writer.lock().await;
                if serial_le(w.cmd_sn, self.max_cmd_sn.load(Ordering::Acquire)) {
                    let p = pdu::scsi_command(itt, self.seq(w.cmd_sn), lun, cmd, block_size)?;
                    w.cmd_sn = w.cmd_sn.wrapping_add(1);
                    let bytes = p.encode()?;
                    match tokio::time::timeout_at(deadline, w.half.write_all(&bytes)).await {
                        Ok(Ok(())) => break,
                        Ok(Err(e)) => return Err(Error::Io(e)),
                        Err(_) => return Err(timeout()),
                    }
                }
            }
            // Window closed: wait for the target to open it (or poll).
            let wake = deadline.min(Instant::now() + std::time::Duration::from_millis(50));
            let _ = tokio::time::timeout_at(wake, notified).await;
            if Instant::now() >= deadline {
                self.complete(itt, Err(timeout()));
                return Err(timeout());
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection closed"))),
            Err(_) => {
                self.complete(itt, Err(timeout()));
                Err(timeout())
            }
        }
    }
}

async fn reader_loop(conn: Arc<Conn>, mut rd: tokio::net::tcp::OwnedReadHalf) {
    let why = loop {
        match read_one(&conn, &mut rd).await {
            Ok(()) => {}
            Err(e) => break e.to_string(),
        }
    };
    tracing::debug!("iSCSI connection ends: {why}");
    conn.kill(&why);
}

/// Reads and handles one PDU. A Data-In PDU's payload is read straight
/// into its command's buffer at the announced offset (checked first).
async fn read_one(conn: &Arc<Conn>, rd: &mut tokio::net::tcp::OwnedReadHalf) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut bhs = [0u8; pdu::BHS_LEN];
    rd.read_exact(&mut bhs).await.map_err(Error::Io)?;
    let (ahs_len, data_len) = Pdu::lengths(&bhs);
    if bhs[0] & 0x3f != op::DATA_IN || ahs_len != 0 || data_len == 0 {
        let p = pdu::read_rest(rd, bhs, OUR_MAX_RECV as usize).await?;
        return conn.dispatch(p);
    }
    if data_len > OUR_MAX_RECV as usize {
        return Err(Error::Protocol(format!("Data-In of {data_len} bytes, more than the {OUR_MAX_RECV} negotiated")));
    }
    let header = Pdu { bhs, ahs: Vec::new(), data: Vec::new() };
    let d = DataIn::parse(&header);
    let itt = header.itt();
    let off = usize::try_from(d.buffer_offset).unwrap_or(usize::MAX);
    let mut buf = {
        let mut map = conn.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pend) = map.get_mut(&itt) else {
            return Err(Error::Protocol(format!("Data-In for unknown task tag {itt:#x}")));
        };
        if off != pend.got || off.checked_add(data_len).is_none_or(|e| e > pend.buf.len()) {
            return Err(Error::Protocol(format!(
                "Data-In for task {itt:#x}: {data_len} bytes at buffer offset {off}, expected offset {} within {} bytes",
                pend.got,
                pend.buf.len()
            )));
        }
        std::mem::take(&mut pend.buf)
    };
    let end = off + data_len;
    let read = match buf.get_mut(off..end) {
        Some(dst) => rd.read_exact(dst).await.map(|_| ()),
        None => Ok(()),
    };
    let mut pad = [0u8; 3];
    let read = read.and(rd.read_exact(&mut pad[..(4 - data_len % 4) % 4]).await.map(|_| ()));
    {
        let mut map = conn.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pend) = map.get_mut(&itt) {
            pend.buf = buf;
            pend.got = end;
        }
    }
    read.map_err(Error::Io)?;
    conn.note_sn(&header, d.has_status);
    if d.has_status {
        conn.finish(itt, d.status, None);
    }
    Ok(())
}

/// A session to one target, reconnecting as needed.
pub struct Session {
    cfg: SessionConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    itt: AtomicU32,
    /// Once logged in, a refused login (target not yet configured again
    /// after a restart, target busy) is retried like a lost connection.
    ever_connected: AtomicBool,
}

impl Session {
    /// Logs in now (so a wrong address or secret fails at open).
    pub async fn open(cfg: SessionConfig) -> Result<Session> {
        let s = Session { cfg, conn: tokio::sync::Mutex::new(None), itt: AtomicU32::new(1), ever_connected: AtomicBool::new(false) };
        s.connection().await?;
        Ok(s)
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The negotiated MaxBurstLength: the largest READ sent as one command.
    pub async fn max_burst(&self) -> u32 {
        match self.conn.lock().await.as_ref() {
            Some(c) => c.params.max_burst,
            None => crate::login::OUR_MAX_BURST,
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.dead.load(Ordering::Acquire) {
                return Ok(Arc::clone(c));
            }
        }
        *slot = None;
        let t = LoginTarget { portal: &self.cfg.portal, target: Some(&self.cfg.target), auth: self.cfg.auth.as_ref() };
        let LoggedIn { stream, cmd_sn, exp_stat_sn, max_cmd_sn, params } = connect_and_login(&t, &self.cfg.limits).await?;
        let (rd, wr) = stream.into_split();
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(Writer { half: wr, cmd_sn }),
            exp_stat_sn: AtomicU32::new(exp_stat_sn),
            max_cmd_sn: AtomicU32::new(max_cmd_sn),
            window: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            reader: Mutex::new(None),
            params,
        });
        let h = tokio::spawn(reader_loop(Arc::clone(&conn), rd));
        *conn.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
        tracing::debug!(portal = %self.cfg.portal, target = %self.cfg.target, "iSCSI login complete");
        *slot = Some(Arc::clone(&conn));
        self.ever_connected.store(true, Ordering::Release);
        Ok(conn)
    }

    async fn drop_connection(&self, conn: &Arc<Conn>, why: &str) {
        conn.kill(why);
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    fn next_itt(&self) -> u32 {
        loop {
            let i = self.itt.fetch_add(1, Ordering::Relaxed);
            if i != NO_TAG {
                return i;
            }
        }
    }

    /// Runs a read-only command on `lun` and returns its data-in bytes.
    /// Unit attentions are retried; a lost connection or a timeout leads
    /// to a new login and the command is sent again, up to the limit.
    pub async fn execute(&self, lun: u64, cmd: ReadOnlyCommand, block_size: u32) -> Result<Vec<u8>> {
        let limits = &self.cfg.limits;
        let secs = limits.timeout.as_secs();
        let mut failures = 0u32;
        let mut unit_attentions = 0u32;
        let mut backoff = limits.backoff_start;
        loop {
            let attempt = async {
                let conn = self.connection().await?;
                let deadline = Instant::now() + limits.timeout;
                match conn.submit(self.next_itt(), lun, &cmd, block_size, deadline, secs).await {
                    Ok(c) => Ok(c),
                    Err(e) => {
                        if e.is_connection() {
                            self.drop_connection(&conn, &e.to_string()).await;
                        }
                        Err(e)
                    }
                }
            };
            let err = match attempt.await {
                Ok(c) => match c.status {
                    STATUS_GOOD => {
                        if matches!(cmd, ReadOnlyCommand::Read16 { .. }) && c.data.len() as u64 != cmd.data_in_len(block_size) {
                            return Err(Error::Scsi {
                                command: cmd.name(),
                                lun,
                                detail: format!("target returned {} of {} bytes", c.data.len(), cmd.data_in_len(block_size)),
                            });
                        }
                        return Ok(c.data);
                    }
                    STATUS_CHECK_CONDITION if c.sense.is_some_and(|s| s.is_unit_attention()) && unit_attentions < MAX_UNIT_ATTENTIONS => {
                        unit_attentions += 1;
                        continue;
                    }
                    STATUS_CHECK_CONDITION => {
                        let detail = c.sense.map(|s| format!("CHECK CONDITION, {s}")).unwrap_or_else(|| "CHECK CONDITION without sense data".into());
                        return Err(Error::Scsi { command: cmd.name(), lun, detail });
                    }
                    STATUS_BUSY | STATUS_TASK_SET_FULL => format!("target busy (status {:#04x})", c.status),
                    s => return Err(Error::Scsi { command: cmd.name(), lun, detail: format!("SCSI status {s:#04x}") }),
                },
                Err(e) if e.is_connection() => e.to_string(),
                Err(e @ Error::Login { .. }) if self.ever_connected.load(Ordering::Acquire) => e.to_string(),
                Err(e) => return Err(e),
            };
            failures += 1;
            if failures > limits.reconnect_attempts {
                return Err(Error::GaveUp {
                    portal: self.cfg.portal.to_string(),
                    target: self.cfg.target.clone(),
                    attempts: limits.reconnect_attempts,
                    last: err,
                });
            }
            tracing::warn!(portal = %self.cfg.portal, target = %self.cfg.target, "{} on LUN {lun}: {err}; retrying in {:?}", cmd.name(), backoff);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(limits.backoff_max);
        }
    }

    /// Logs out politely (best effort).
    pub async fn logout(&self) {
        let conn = self.conn.lock().await.take();
        if let Some(c) = conn {
            let mut w = c.writer.lock().await;
            let p = pdu::logout_request(self.next_itt(), c.seq(w.cmd_sn));
            if let Ok(b) = p.encode() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), w.half.write_all(&b)).await;
            }
        }
    }
}
