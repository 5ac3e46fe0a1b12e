//! A read-only iSCSI initiator (RFC 7143): discovery, login with optional
//! CHAP, one session per LUN source with several READ(16) in flight, and
//! reconnection after a lost connection.
//!
//! Read-only by construction: the only SCSI command the session accepts is
//! a [`scsi::ReadOnlyCommand`] (no write member exists), the PDU encoder
//! never sets the Write bit and never carries immediate data, and the
//! negotiation offers nothing a write would need. A unit test in `pdu`
//! encodes every command and checks opcode and flags.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod login;
pub mod lun;
pub mod pdu;
pub mod session;
pub mod text;
pub mod url;

pub use discovery::{discover, DiscoveredTarget};
pub use lun::IscsiLun;
pub use session::{Session, SessionConfig};
pub use url::{Auth, IscsiUrl, Portal};

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid iSCSI address: {0}")]
    Url(String),
    #[error("cannot connect to iSCSI portal {portal}: {source}")]
    Connect { portal: String, source: std::io::Error },
    #[error("iSCSI {what} timed out after {secs} s (VBPROXY_ISCSI_TIMEOUT)")]
    Timeout { what: String, secs: u64 },
    #[error("iSCSI authentication failed at {portal} for target {target}: {detail}")]
    Auth { portal: String, target: String, detail: String },
    #[error("iSCSI login to {target} at {portal} refused: {detail}")]
    Login { portal: String, target: String, detail: String },
    #[error("iSCSI protocol error: {0}")]
    Protocol(String),
    #[error("iSCSI connection lost: {0}")]
    Io(std::io::Error),
    #[error("SCSI {command} failed on LUN {lun}: {detail}")]
    Scsi { command: &'static str, lun: u64, detail: String },
    #[error("iSCSI target {target} at {portal} unreachable after {attempts} reconnection attempts: {last}")]
    GaveUp { portal: String, target: String, attempts: u32, last: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Errors after which a new connection may succeed (the read is re-issued).
    pub fn is_connection(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Timeout { .. } | Error::Connect { .. } | Error::Protocol(_))
    }
}

/// Timeouts and retry limits. Defaults come from the environment:
/// `VBPROXY_ISCSI_TIMEOUT` (seconds per connect, login step and command;
/// default 30) and `VBPROXY_ISCSI_RETRIES` (reconnections per failed
/// command; default 6, with backoff 0.25 s doubling to 2 s).
#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    pub reconnect_attempts: u32,
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    /// READ(16) commands in flight per LUN.
    pub queue_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite() && *v > 0.0);
        Limits {
            timeout: Duration::from_secs_f64(env("VBPROXY_ISCSI_TIMEOUT").unwrap_or(30.0).min(86_400.0)),
            reconnect_attempts: env("VBPROXY_ISCSI_RETRIES").map(|v| v.min(1000.0) as u32).unwrap_or(6),
            backoff_start: Duration::from_millis(250),
            backoff_max: Duration::from_secs(2),
            queue_depth: 8,
        }
    }
}

/// This initiator's iSCSI name (`VBPROXY_ISCSI_INITIATOR` overrides).
pub fn initiator_name() -> String {
    std::env::var("VBPROXY_ISCSI_INITIATOR").unwrap_or_else(|_| "iqn.2026-11.io.vbproxy:initiator".to_string())
}
