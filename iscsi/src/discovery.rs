//! SendTargets discovery (RFC 7143 13.3, appendix C): a discovery session
//! asks the portal for every target it offers.

use crate::login::{connect_and_login, LoginTarget};
use crate::pdu::{self, op, Seq, NO_TAG};
use crate::url::{Auth, Portal};
use crate::{text, Error, Limits, Result};
use tokio::io::AsyncWriteExt;

/// A target offered by a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    pub name: String,
    /// `TargetAddress` values (`host:port,tpgt`).
    pub addresses: Vec<String>,
}

/// Most bytes of SendTargets answer accepted (continuations included).
const MAX_ANSWER: usize = 4 << 20;

/// The targets a portal offers (`SendTargets=All`).
pub async fn discover(portal: &Portal, auth: Option<&Auth>, limits: &Limits) -> Result<Vec<DiscoveredTarget>> {
    let t = LoginTarget { portal, target: None, auth };
    let mut s = connect_and_login(&t, limits).await?;
    let secs = limits.timeout.as_secs();
    let work = async {
        let mut answer = Vec::new();
        let mut ttt = NO_TAG;
        let mut body = text::encode(&[("SendTargets", "All")]);
        loop {
            let req = pdu::text_request(1, ttt, Seq { cmd_sn: s.cmd_sn, exp_stat_sn: s.exp_stat_sn }, std::mem::take(&mut body));
            s.stream.write_all(&req.encode()?).await.map_err(Error::Io)?;
            let resp = pdu::read_pdu(&mut s.stream, crate::login::OUR_MAX_RECV as usize).await?;
            if resp.opcode() != op::TEXT_RESPONSE {
                return Err(Error::Protocol(format!("expected a Text Response to SendTargets, got opcode {:#04x}", resp.opcode())));
            }
            s.exp_stat_sn = resp.stat_sn().wrapping_add(1);
            s.cmd_sn = s.cmd_sn.wrapping_add(1);
            answer.extend_from_slice(&resp.data);
            if answer.len() > MAX_ANSWER {
                return Err(Error::Protocol("SendTargets answer larger than 4 MiB".into()));
            }
            // C bit: more text follows; ask for it with the target's tag.
            if resp.flags() & 0x40 == 0 && resp.final_bit() {
                break;
            }
            ttt = resp.ttt();
        }
        let req = pdu::logout_request(2, Seq { cmd_sn: s.cmd_sn, exp_stat_sn: s.exp_stat_sn });
        let _ = s.stream.write_all(&req.encode()?).await;
        Ok(answer)
    };
    let answer = tokio::time::timeout(limits.timeout, work).await.map_err(|_| Error::Timeout { what: format!("SendTargets at {portal}"), secs })??;
    parse_send_targets(&answer)
}

/// Groups `TargetName=` / `TargetAddress=` pairs.
pub fn parse_send_targets(b: &[u8]) -> Result<Vec<DiscoveredTarget>> {
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for (k, v) in text::decode(b)? {
        match (k.as_str(), out.last_mut()) {
            ("TargetName", _) => out.push(DiscoveredTarget { name: v, addresses: Vec::new() }),
            ("TargetAddress", Some(t)) => t.addresses.push(v),
            ("TargetAddress", None) => return Err(Error::Protocol("SendTargets: TargetAddress before any TargetName".into())),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_addresses() {
        let b = b"TargetName=iqn.a:1\0TargetAddress=127.0.0.1:3260,1\0TargetName=iqn.a:2\0TargetAddress=[::1]:3260,1\0TargetAddress=10.0.0.1:3260,2\0";
        let t = parse_send_targets(b).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].addresses.len(), 2);
        assert!(parse_send_targets(b"TargetAddress=x\0").is_err());
    }
}
