//! `iscsi://[user[%secret]@]HOST[:PORT]/IQN/LUN` sources, read through the
//! built-in read-only initiator (the `iscsi` crate), and the listing of a
//! portal's LUNs as [`LunInfo`] records.
//!
//! Credentials: `user%secret` in the URL, or `VBPROXY_ISCSI_USER` with
//! `VBPROXY_ISCSI_SECRET` / `VBPROXY_ISCSI_SECRET_FILE`. Secrets are never
//! printed: URLs are shown without them.

use crate::lun::info::{Content, DesignatorInfo, LunInfo};
use anyhow::{Context, Result};
use guestfs::block::ReadAt;
use iscsi::{Auth, IscsiLun, IscsiUrl, Limits, Portal};
use std::sync::Arc;

/// Opens a remote LUN for reading.
pub fn open(url: &str) -> Result<Arc<dyn ReadAt>> {
    let u = IscsiUrl::parse(url)?;
    let lun = IscsiLun::open(&u, Limits::default()).with_context(|| format!("opening {u}"))?;
    Ok(Arc::new(lun))
}

/// Credentials for a portal listing: `user` with a secret file, else the
/// environment (`VBPROXY_ISCSI_USER`, `VBPROXY_ISCSI_SECRET[_FILE]`).
pub fn auth_from(user: Option<&str>, secret_file: Option<&std::path::Path>) -> Result<Option<Auth>> {
    match (user, secret_file) {
        (Some(u), Some(f)) => Ok(Some(Auth { user: u.to_string(), secret: iscsi::url::secret_from_file(f)?, ..Auth::default() })),
        (Some(u), None) => {
            let env = Auth::from_env()?.context("--user given without --chap-secret-file or VBPROXY_ISCSI_SECRET")?;
            Ok(Some(Auth { user: u.to_string(), ..env }))
        }
        (None, Some(_)) => anyhow::bail!("--chap-secret-file needs --user"),
        (None, None) => Ok(Auth::from_env()?),
    }
}

/// Every disk LUN a portal (`host[:port]`, `[v6]:port`) offers, with its
/// identifiers. `lun list --iscsi PORTAL` and validation call this.
pub fn list_luns(portal: &str, auth: Option<&Auth>) -> Result<Vec<LunInfo>> {
    let p = Portal::parse(portal)?;
    let luns = iscsi::lun::probe_portal(&p, auth, Limits::default()).with_context(|| format!("listing the LUNs of iSCSI portal {p}"))?;
    Ok(luns
        .into_iter()
        .map(|l| {
            let url = IscsiUrl { portal: p.clone(), target: l.target.clone(), lun: l.lun, auth: None };
            LunInfo {
                device: url.to_string(),
                hctl: None,
                target: Some(l.target),
                lun: l.lun,
                vendor: l.inquiry.vendor,
                model: l.inquiry.model,
                revision: l.inquiry.revision,
                serial: l.serial,
                id: scsi::preferred_id(&l.designators),
                designators: l.designators.iter().map(DesignatorInfo::from_scsi).collect(),
                size: l.capacity.size_bytes(),
                logical_block_size: l.capacity.block_size,
                physical_block_size: u32::try_from(l.capacity.physical_block_size()).unwrap_or(u32::MAX),
                read_only: None,
                content: Content { kind: "unknown".into(), ..Content::default() },
            }
        })
        .collect())
}

/// `vbproxy iscsi-ls PORTAL [--json]`.
pub fn ls(portal: &str, json: bool, user: Option<&str>, secret_file: Option<&std::path::Path>) -> Result<()> {
    let auth = auth_from(user, secret_file)?;
    let luns = list_luns(portal, auth.as_ref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&luns)?);
        return Ok(());
    }
    for l in &luns {
        println!(
            "{}  {}  serial {}  {} {} {}  {} ({} B blocks)",
            l.device,
            l.id.as_deref().unwrap_or("-"),
            l.serial.as_deref().unwrap_or("-"),
            l.vendor,
            l.model,
            l.revision,
            crate::human_size(l.size),
            l.logical_block_size
        );
    }
    Ok(())
}

