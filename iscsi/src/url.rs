//! `iscsi://[user[%secret]@]host[:port]/target-iqn/lun` (libiscsi's URL
//! syntax). IPv6 hosts are bracketed (`[::1]:3260`). The secret may also
//! come from `VBPROXY_ISCSI_USER`/`VBPROXY_ISCSI_SECRET` or a file; it is
//! never printed ([`IscsiUrl`]'s Display leaves it out).

use crate::{Error, Result};

pub const DEFAULT_PORT: u16 = 3260;

/// CHAP credentials.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub user: String,
    pub secret: String,
    /// Mutual CHAP: the target must prove it knows this (user, secret).
    pub target_user: Option<String>,
    pub target_secret: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth {{ user: {:?}, secret: <hidden>, mutual: {} }}", self.user, self.target_secret.is_some())
    }
}

impl Auth {
    /// Credentials from the environment: `VBPROXY_ISCSI_USER` with
    /// `VBPROXY_ISCSI_SECRET` or `VBPROXY_ISCSI_SECRET_FILE` (first line).
    pub fn from_env() -> Result<Option<Auth>> {
        let Ok(user) = std::env::var("VBPROXY_ISCSI_USER") else { return Ok(None) };
        let secret = secret_from_env()?
            .ok_or_else(|| Error::Url("VBPROXY_ISCSI_USER is set but neither VBPROXY_ISCSI_SECRET nor VBPROXY_ISCSI_SECRET_FILE".into()))?;
        Ok(Some(Auth { user, secret, ..Auth::default() }))
    }
}

/// `VBPROXY_ISCSI_SECRET`, else the first line of `VBPROXY_ISCSI_SECRET_FILE`.
pub fn secret_from_env() -> Result<Option<String>> {
    match (std::env::var("VBPROXY_ISCSI_SECRET"), std::env::var("VBPROXY_ISCSI_SECRET_FILE")) {
        (Ok(s), _) => Ok(Some(s)),
        (Err(_), Ok(f)) => secret_from_file(std::path::Path::new(&f)).map(Some),
        _ => Ok(None),
    }
}

/// The first line of a secret file (a trailing newline is not part of it).
pub fn secret_from_file(path: &std::path::Path) -> Result<String> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::Url(format!("CHAP secret file {}: {e}", path.display())))?;
    Ok(s.lines().next().unwrap_or("").to_string())
}

/// A portal: host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Portal {
    /// `host`, `host:port`, `[v6]`, `[v6]:port`.
    pub fn parse(s: &str) -> Result<Portal> {
        let bad = |why: &str| Error::Url(format!("portal {s:?}: {why}"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (h, port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(bad("no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| bad("port is not a number 1-65535")).and_then(|p: u16| if p == 0 { Err(bad("port 0")) } else { Ok(p) })?,
        };
        Ok(Portal { host: host.to_string(), port })
    }
}

/// A parsed `iscsi://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    pub portal: Portal,
    pub target: String,
    pub lun: u64,
    pub auth: Option<Auth>,
}

impl std::fmt::Debug for IscsiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IscsiUrl({self})")
    }
}

/// Without the secret: `iscsi://user@host:port/iqn/lun`.
impl std::fmt::Display for IscsiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "iscsi://")?;
        if let Some(a) = &self.auth {
            write!(f, "{}@", a.user)?;
        }
        write!(f, "{}/{}/{}", self.portal, self.target, self.lun)
    }
}

impl IscsiUrl {
    /// Parses a URL; credentials in it win over the environment's.
    pub fn parse(s: &str) -> Result<IscsiUrl> {
        // Never echo the input: it may hold a secret.
        let rest = s.strip_prefix("iscsi://").ok_or_else(|| Error::Url("an iSCSI URL starts with iscsi://".into()))?;
        let (cred, rest) = match rest.split_once('/') {
            Some((authority, path)) => match authority.rsplit_once('@') {
                Some((c, host)) => (Some(c), format!("{host}/{path}")),
                None => (None, rest.to_string()),
            },
            None => return Err(Error::Url("iSCSI URL without /TARGET/LUN (iscsi://HOST[:PORT]/IQN/LUN)".into())),
        };
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("");
        let lun = parts.next().unwrap_or("");
        let portal = Portal::parse(host)?;
        if target.is_empty() {
            return Err(Error::Url(format!("iscsi://{portal}/...: no target name")));
        }
        let lun: u64 = lun
            .trim_end_matches('/')
            .parse()
            .ok()
            .filter(|&l| l <= 16383)
            .ok_or_else(|| Error::Url(format!("iscsi://{portal}/{target}/: LUN must be a number 0-16383")))?;
        let auth = match cred {
            Some(c) => {
                let (user, secret) = match c.split_once('%') {
                    Some((u, s)) => (u.to_string(), s.to_string()),
                    None => {
                        let secret = secret_from_env()?.ok_or_else(|| {
                            Error::Url(format!("iscsi://{c}@{portal}/...: no CHAP secret (user%secret in the URL, VBPROXY_ISCSI_SECRET or VBPROXY_ISCSI_SECRET_FILE)"))
                        })?;
                        (c.to_string(), secret)
                    }
                };
                Some(Auth { user, secret, ..Auth::default() })
            }
            None => Auth::from_env()?,
        };
        Ok(IscsiUrl { portal, target: target.to_string(), lun, auth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libiscsi_syntax() {
        let u = IscsiUrl::parse("iscsi://alice%s3cret@10.0.0.5:3261/iqn.2026-11.test:t1/7").unwrap();
        assert_eq!(u.portal, Portal { host: "10.0.0.5".into(), port: 3261 });
        assert_eq!((u.target.as_str(), u.lun), ("iqn.2026-11.test:t1", 7));
        assert_eq!(u.auth.as_ref().unwrap().secret, "s3cret");
        assert!(!u.to_string().contains("s3cret"));
        assert!(!format!("{u:?}").contains("s3cret"));
        let v = IscsiUrl::parse("iscsi://[::1]/iqn.x:y/0").unwrap();
        assert_eq!(v.portal.port, 3260);
        assert_eq!(v.portal.to_string(), "[::1]:3260");
        for bad in ["iscsi://host/iqn", "iscsi://host//1", "http://x/y/1", "iscsi://h:99999/t/1", "iscsi://h/t/x", "iscsi://[::1/t/1"] {
            assert!(IscsiUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Portal::parse("[fe80::1]:3270").unwrap().port, 3270);
    }
}
