//! Login (RFC 7143 6.3, 11.12-13): the security stage with optional CHAP
//! (RFC 7143 12.1.3, MD5, one-way or mutual) and the operational stage,
//! where digests are refused (None only), ErrorRecoveryLevel=0 and one
//! connection per session are asked for.

use crate::pdu::{self, op, LoginResponse, Pdu, Seq};
use crate::text;
use crate::url::{Auth, Portal};
use crate::{Error, Limits, Result};
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The data segment size this initiator declares it can receive. Data-In
/// PDUs are at most this long.
pub const OUR_MAX_RECV: u32 = 262_144;
/// The largest burst asked for (a READ of up to this many bytes comes back
/// as one sequence).
pub const OUR_MAX_BURST: u32 = 1 << 20;
/// Data segments accepted during login (RFC 7143: 8192 until negotiated).
const LOGIN_MAX_DATA: usize = 65_536;

/// What the target agreed to.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    pub max_burst: u32,
    pub target_max_recv: u32,
    pub tsih: u16,
}

/// A connection in full feature phase.
pub struct LoggedIn {
    pub stream: TcpStream,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub max_cmd_sn: u32,
    pub params: Negotiated,
}

/// Session type and the target to reach (None: discovery session).
pub struct LoginTarget<'a> {
    pub portal: &'a Portal,
    pub target: Option<&'a str>,
    pub auth: Option<&'a Auth>,
}

impl LoginTarget<'_> {
    fn name(&self) -> String {
        self.target.unwrap_or("(discovery)").to_string()
    }
}

/// Connects to the portal and logs in, each step bounded by `limits.timeout`.
pub async fn connect_and_login(t: &LoginTarget<'_>, limits: &Limits) -> Result<LoggedIn> {
    let secs = limits.timeout.as_secs();
    let portal = t.portal.to_string();
    let stream = tokio::time::timeout(limits.timeout, TcpStream::connect((t.portal.host.as_str(), t.portal.port)))
        .await
        .map_err(|_| Error::Timeout { what: format!("connect to {portal}"), secs })?
        .map_err(|source| Error::Connect { portal: portal.clone(), source })?;
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(limits.timeout.saturating_mul(2), login(stream, t))
        .await
        .map_err(|_| Error::Timeout { what: format!("login to {} at {portal}", t.name()), secs: secs.saturating_mul(2) })?
}

struct Exchange {
    stream: TcpStream,
    isid: [u8; 6],
    tsih: u16,
    seq: Seq,
    max_cmd_sn: u32,
}

impl Exchange {
    async fn send(&mut self, transit: bool, csg: u8, nsg: u8, keys: Vec<u8>) -> Result<(LoginResponse, Vec<(String, String)>)> {
        let req = pdu::login_request(self.isid, self.tsih, 0, self.seq, transit, csg, nsg, keys);
        self.stream.write_all(&req.encode()?).await.map_err(Error::Io)?;
        let resp: Pdu = pdu::read_pdu(&mut self.stream, LOGIN_MAX_DATA).await?;
        if resp.opcode() == op::REJECT {
            return Err(Error::Protocol("target rejected the Login Request PDU".into()));
        }
        let lr = LoginResponse::parse(&resp)?;
        self.seq.exp_stat_sn = resp.stat_sn().wrapping_add(1);
        self.max_cmd_sn = resp.max_cmd_sn();
        if lr.tsih != 0 {
            self.tsih = lr.tsih;
        }
        let keys = if lr.status_class == 0 { text::decode(&resp.data)? } else { Vec::new() };
        Ok((lr, keys))
    }
}

fn status_error(t: &LoginTarget<'_>, lr: &LoginResponse) -> Error {
    let (portal, target) = (t.portal.to_string(), t.name());
    let detail = match (lr.status_class, lr.status_detail) {
        (1, _) => "target redirects to another portal (not supported)".to_string(),
        (2, 0x01) => {
            let hint = if t.auth.is_some() { "wrong CHAP user or secret" } else { "the target requires CHAP: give user%secret in the URL or VBPROXY_ISCSI_USER/SECRET" };
            return Error::Auth { portal, target, detail: hint.into() };
        }
        (2, 0x02) => return Error::Auth { portal, target, detail: "this initiator is not authorized for the target (ACL)".into() },
        (2, 0x03) => "no such target at this portal".into(),
        (2, 0x04) => "target removed".into(),
        (2, d) => format!("initiator error (status 0x02{d:02x})"),
        (3, d) => format!("target error (status 0x03{d:02x}); try again later"),
        (c, d) => format!("status 0x{c:02x}{d:02x}"),
    };
    Error::Login { portal, target, detail }
}

async fn login(stream: TcpStream, t: &LoginTarget<'_>) -> Result<LoggedIn> {
    let mut isid = [0x80u8, 0, 0, 0, 0, 0];
    getrandom::fill(&mut isid[1..]).map_err(|e| Error::Protocol(format!("no random ISID: {e}")))?;
    let mut x = Exchange { stream, isid, tsih: 0, seq: Seq { cmd_sn: 1, exp_stat_sn: 0 }, max_cmd_sn: 1 };
    let initiator = crate::initiator_name();
    let mut keys: Vec<(&str, &str)> = vec![("InitiatorName", &initiator)];
    match t.target {
        Some(name) => keys.extend([("SessionType", "Normal"), ("TargetName", name)]),
        None => keys.push(("SessionType", "Discovery")),
    }
    keys.push(("AuthMethod", if t.auth.is_some() { "CHAP,None" } else { "None" }));

    // Security stage.
    let (lr, resp) = x.send(t.auth.is_none(), 0, 1, text::encode(&keys)).await?;
    if lr.status_class != 0 {
        return Err(status_error(t, &lr));
    }
    let mut in_operational = lr.transit && lr.nsg == 1;
    if !in_operational {
        let method = text::get(&resp, "AuthMethod").unwrap_or("");
        match (method, t.auth) {
            ("CHAP", Some(auth)) => {
                chap(&mut x, t, auth).await?;
                in_operational = true;
            }
            ("None", _) => {
                let (lr, _) = x.send(true, 0, 1, Vec::new()).await?;
                if lr.status_class != 0 {
                    return Err(status_error(t, &lr));
                }
                in_operational = lr.transit && lr.nsg == 1;
            }
            (m, _) => {
                return Err(Error::Auth {
                    portal: t.portal.to_string(),
                    target: t.name(),
                    detail: format!("target asks for authentication method {:?}, this initiator offers CHAP or None", text::printable(m)),
                })
            }
        }
    }
    if !in_operational {
        return Err(Error::Protocol("target did not leave the security stage".into()));
    }

    // Operational stage.
    let burst = OUR_MAX_BURST.to_string();
    let recv = OUR_MAX_RECV.to_string();
    let mut op_keys: Vec<(&str, &str)> = vec![("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxRecvDataSegmentLength", &recv)];
    if t.target.is_some() {
        op_keys.extend([
            ("InitialR2T", "Yes"),
            ("ImmediateData", "No"),
            ("MaxBurstLength", &burst),
            ("FirstBurstLength", "65536"),
            ("MaxOutstandingR2T", "1"),
            ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
            ("DefaultTime2Wait", "0"),
            ("DefaultTime2Retain", "0"),
        ]);
    }
    let mut agreed: Vec<(String, String)> = Vec::new();
    let mut body = text::encode(&op_keys);
    for _ in 0..8 {
        let (lr, resp) = x.send(true, 1, 3, std::mem::take(&mut body)).await?;
        if lr.status_class != 0 {
            return Err(status_error(t, &lr));
        }
        agreed.extend(resp);
        if lr.transit && lr.nsg == 3 {
            return finish(x, &agreed);
        }
    }
    Err(Error::Protocol("operational negotiation did not end after 8 exchanges".into()))
}

fn finish(x: Exchange, agreed: &[(String, String)]) -> Result<LoggedIn> {
    for k in ["HeaderDigest", "DataDigest"] {
        if let Some(v) = text::get(agreed, k) {
            if v != "None" {
                return Err(Error::Protocol(format!("target insists on {k}={}; this initiator supports None only", text::printable(v))));
            }
        }
    }
    if let Some(v) = text::get(agreed, "DataPDUInOrder") {
        if v != "Yes" {
            return Err(Error::Protocol("target insists on DataPDUInOrder=No; not supported".into()));
        }
    }
    let clamp = |v: Option<u64>, dflt: u32| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX)).unwrap_or(dflt);
    let max_burst = clamp(text::number(agreed, "MaxBurstLength")?, 262_144).clamp(512, OUR_MAX_BURST);
    let target_max_recv = clamp(text::number(agreed, "MaxRecvDataSegmentLength")?, 8192).max(512);
    Ok(LoggedIn {
        stream: x.stream,
        cmd_sn: x.seq.cmd_sn,
        exp_stat_sn: x.seq.exp_stat_sn,
        max_cmd_sn: x.max_cmd_sn,
        params: Negotiated { max_burst, target_max_recv, tsih: x.tsih },
    })
}

/// The CHAP response: MD5(identifier || secret || challenge).
pub fn chap_response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Decodes a CHAP binary value (`0x` hex; at most 1024 bytes).
pub fn unhex(v: &str) -> Result<Vec<u8>> {
    let h = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")).ok_or_else(|| Error::Protocol("CHAP value is not 0x-hex (base64 is not supported)".into()))?;
    if h.len() % 2 != 0 || h.len() > 2048 || h.is_empty() {
        return Err(Error::Protocol(format!("CHAP value of {} hex digits", h.len())));
    }
    (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()).ok_or_else(|| Error::Protocol("CHAP value is not hex".into())))
        .collect()
}

async fn chap(x: &mut Exchange, t: &LoginTarget<'_>, auth: &Auth) -> Result<()> {
    let auth_err = |detail: String| Error::Auth { portal: t.portal.to_string(), target: t.name(), detail };
    let (lr, resp) = x.send(false, 0, 0, text::encode(&[("CHAP_A", "5")])).await?;
    if lr.status_class != 0 {
        return Err(status_error(t, &lr));
    }
    if text::get(&resp, "CHAP_A") != Some("5") {
        return Err(auth_err("target does not offer CHAP with MD5 (CHAP_A=5)".into()));
    }
    let id = text::number(&resp, "CHAP_I")?.and_then(|i| u8::try_from(i).ok()).ok_or_else(|| auth_err("target sent no valid CHAP_I".into()))?;
    let challenge = unhex(text::get(&resp, "CHAP_C").ok_or_else(|| auth_err("target sent no CHAP_C".into()))?)?;
    let response = hex(&chap_response(id, auth.secret.as_bytes(), &challenge));
    let mut keys: Vec<(&str, &str)> = vec![("CHAP_N", &auth.user), ("CHAP_R", &response)];
    let mut ours = [0u8; 17];
    getrandom::fill(&mut ours).map_err(|e| Error::Protocol(format!("no random CHAP challenge: {e}")))?;
    let (our_id, our_challenge) = (ours[0], &ours[1..]);
    let (our_id_s, our_c_s) = (our_id.to_string(), hex(our_challenge));
    let mutual = auth.target_secret.is_some();
    if mutual {
        keys.extend([("CHAP_I", our_id_s.as_str()), ("CHAP_C", our_c_s.as_str())]);
    }
    let (lr, resp) = x.send(true, 0, 1, text::encode(&keys)).await?;
    if lr.status_class != 0 {
        return Err(status_error(t, &lr));
    }
    if let Some(secret) = &auth.target_secret {
        let their = unhex(text::get(&resp, "CHAP_R").ok_or_else(|| auth_err("target did not answer the mutual CHAP challenge".into()))?)?;
        let name_ok = auth.target_user.as_deref().is_none_or(|u| text::get(&resp, "CHAP_N") == Some(u));
        if !name_ok || their != chap_response(our_id, secret.as_bytes(), our_challenge) {
            return Err(auth_err("the target failed mutual CHAP (it does not know the target secret)".into()));
        }
    }
    if !(lr.transit && lr.nsg == 1) {
        // Some targets want one more empty exchange to change stage.
        let (lr, _) = x.send(true, 0, 1, Vec::new()).await?;
        if lr.status_class != 0 {
            return Err(status_error(t, &lr));
        }
        if !(lr.transit && lr.nsg == 1) {
            return Err(Error::Protocol("target did not leave the security stage after CHAP".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chap_md5_known_answer() {
        // RFC 1994 style: MD5(0x01 || "secret" || 0x00..0x0f), computed independently with Python hashlib.
        let c: Vec<u8> = (0..16).collect();
        let r = chap_response(1, b"secret", &c);
        assert_eq!(hex(&r), "0x740e86463bda3a4d7017d6e0fba0699d");
        assert_eq!(unhex(&hex(&c)).unwrap(), c);
        assert!(unhex("abc").is_err());
        assert!(unhex("0xzz").is_err());
    }
}
