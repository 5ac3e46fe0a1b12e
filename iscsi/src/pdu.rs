//! iSCSI PDUs (RFC 7143 11): the 48-byte basic header segment, additional
//! header segments, and the data segment padded to 4 bytes. Digests are
//! never negotiated (login refuses a target that insists on CRC32C), so a
//! PDU on the wire is exactly BHS + AHS + data + padding.
//!
//! The only SCSI command PDU this module can build is
//! [`scsi_command`], which takes a [`scsi::ReadOnlyCommand`]: it sets the
//! Read bit when the command returns data, never the Write bit, and never
//! carries immediate data, so there is no way to express a write here.

use crate::{Error, Result};
use scsi::ReadOnlyCommand;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const BHS_LEN: usize = 48;

/// Initiator opcodes this initiator sends.
pub mod op {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_COMMAND: u8 = 0x01;
    pub const LOGIN_REQUEST: u8 = 0x03;
    pub const TEXT_REQUEST: u8 = 0x04;
    pub const LOGOUT_REQUEST: u8 = 0x06;
    // Target opcodes.
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESPONSE: u8 = 0x21;
    pub const TASK_MGMT_RESPONSE: u8 = 0x22;
    pub const LOGIN_RESPONSE: u8 = 0x23;
    pub const TEXT_RESPONSE: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MESSAGE: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

/// The reserved Initiator Task Tag / Target Transfer Tag value.
pub const NO_TAG: u32 = 0xffff_ffff;

/// Largest data segment accepted from a target, whatever it claims: our
/// declared MaxRecvDataSegmentLength is smaller, so anything beyond this is
/// hostile and is refused before allocating.
pub const MAX_DATA_SEGMENT: usize = 1 << 20;

/// One PDU: header, AHS and data segment (without padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub bhs: [u8; BHS_LEN],
    pub ahs: Vec<u8>,
    pub data: Vec<u8>,
}

fn be32(b: &[u8; BHS_LEN], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

impl Pdu {
    pub fn new(opcode: u8) -> Pdu {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = opcode;
        Pdu { bhs, ahs: Vec::new(), data: Vec::new() }
    }

    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }
    pub fn immediate(&self) -> bool {
        self.bhs[0] & 0x40 != 0
    }
    pub fn flags(&self) -> u8 {
        self.bhs[1]
    }
    pub fn final_bit(&self) -> bool {
        self.bhs[1] & 0x80 != 0
    }
    pub fn lun_field(&self) -> [u8; 8] {
        let mut l = [0u8; 8];
        l.copy_from_slice(&self.bhs[8..16]);
        l
    }
    pub fn itt(&self) -> u32 {
        be32(&self.bhs, 16)
    }
    /// Target Transfer Tag (NOP-In, Data-In, Text/Login responses).
    pub fn ttt(&self) -> u32 {
        be32(&self.bhs, 20)
    }
    pub fn word(&self, at: usize) -> u32 {
        be32(&self.bhs, at)
    }
    pub fn set_word(&mut self, at: usize, v: u32) {
        self.bhs[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_itt(&mut self, itt: u32) {
        self.set_word(16, itt);
    }

    /// StatSN of a target PDU that carries one (word 24).
    pub fn stat_sn(&self) -> u32 {
        self.word(24)
    }
    pub fn exp_cmd_sn(&self) -> u32 {
        self.word(28)
    }
    pub fn max_cmd_sn(&self) -> u32 {
        self.word(32)
    }

    /// Header, AHS, data and padding as sent on the wire; lengths filled in.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut bhs = self.bhs;
        if self.ahs.len() % 4 != 0 || self.ahs.len() / 4 > 255 {
            return Err(Error::Protocol(format!("AHS of {} bytes cannot be encoded", self.ahs.len())));
        }
        if self.data.len() >= 1 << 24 {
            return Err(Error::Protocol(format!("data segment of {} bytes cannot be encoded", self.data.len())));
        }
        bhs[4] = (self.ahs.len() / 4) as u8;
        let dl = (self.data.len() as u32).to_be_bytes();
        bhs[5..8].copy_from_slice(&dl[1..4]);
        let pad = (4 - self.data.len() % 4) % 4;
        let mut out = Vec::with_capacity(BHS_LEN + self.ahs.len() + self.data.len() + pad);
        out.extend_from_slice(&bhs);
        out.extend_from_slice(&self.ahs);
        out.extend_from_slice(&self.data);
        out.resize(out.len() + pad, 0);
        Ok(out)
    }

    /// Lengths announced by a header: (AHS bytes, data segment bytes).
    pub fn lengths(bhs: &[u8; BHS_LEN]) -> (usize, usize) {
        let ahs = usize::from(bhs[4]) * 4;
        let data = (usize::from(bhs[5]) << 16) | (usize::from(bhs[6]) << 8) | usize::from(bhs[7]);
        (ahs, data)
    }

    /// Parses one complete PDU from a byte slice (the fuzz entry point);
    /// returns the PDU and the bytes it used.
    pub fn decode(b: &[u8], max_data: usize) -> Result<(Pdu, usize)> {
        let head = b.get(..BHS_LEN).ok_or_else(|| Error::Protocol(format!("PDU of {} bytes is shorter than a header", b.len())))?;
        let mut bhs = [0u8; BHS_LEN];
        bhs.copy_from_slice(head);
        let (ahs_len, data_len) = Pdu::lengths(&bhs);
        check_data_len(&bhs, data_len, max_data)?;
        let pad = (4 - data_len % 4) % 4;
        let total = BHS_LEN + ahs_len + data_len + pad;
        let body = b.get(BHS_LEN..total).ok_or_else(|| Error::Protocol(format!("PDU announces {total} bytes, {} present", b.len())))?;
        let ahs = body.get(..ahs_len).unwrap_or_default().to_vec();
        let data = body.get(ahs_len..ahs_len + data_len).unwrap_or_default().to_vec();
        Ok((Pdu { bhs, ahs, data }, total))
    }
}

fn check_data_len(bhs: &[u8; BHS_LEN], data_len: usize, max_data: usize) -> Result<()> {
    if data_len > max_data.min(MAX_DATA_SEGMENT) {
        return Err(Error::Protocol(format!(
            "target sent a PDU (opcode {:#04x}) with a {data_len}-byte data segment, more than the {max_data} bytes negotiated",
            bhs[0] & 0x3f
        )));
    }
    Ok(())
}

/// Reads one PDU; a data segment longer than `max_data` is a protocol error
/// (refused before allocating).
pub async fn read_pdu<R: AsyncRead + Unpin>(r: &mut R, max_data: usize) -> Result<Pdu> {
    let mut bhs = [0u8; BHS_LEN];
    r.read_exact(&mut bhs).await.map_err(Error::Io)?;
    read_rest(r, bhs, max_data).await
}

/// Reads the AHS, data segment and padding announced by a header already read.
pub async fn read_rest<R: AsyncRead + Unpin>(r: &mut R, bhs: [u8; BHS_LEN], max_data: usize) -> Result<Pdu> {
    let (ahs_len, data_len) = Pdu::lengths(&bhs);
    check_data_len(&bhs, data_len, max_data)?;
    let mut ahs = vec![0u8; ahs_len];
    r.read_exact(&mut ahs).await.map_err(Error::Io)?;
    let pad = (4 - data_len % 4) % 4;
    let mut data = vec![0u8; data_len + pad];
    r.read_exact(&mut data).await.map_err(Error::Io)?;
    data.truncate(data_len);
    Ok(Pdu { bhs, ahs, data })
}

/// Sequence numbers every initiator request carries.
#[derive(Debug, Clone, Copy)]
pub struct Seq {
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// A SCSI Command PDU for a read-only command: Final, Read when the command
/// returns data, attribute SIMPLE, no immediate data, Write never set.
pub fn scsi_command(itt: u32, seq: Seq, lun: u64, cmd: &ReadOnlyCommand, block_size: u32) -> Result<Pdu> {
    let mut p = Pdu::new(op::SCSI_COMMAND);
    let edtl = u32::try_from(cmd.data_in_len(block_size))
        .map_err(|_| Error::Protocol(format!("{} of more than 4 GiB cannot be sent", cmd.name())))?;
    // F=1, R when data comes back, W=0, ATTR=001 (simple).
    let read_bit = if edtl > 0 { 0x40 } else { 0 };
    p.bhs[1] = 0x80 | read_bit | 0x01;
    p.bhs[8..16].copy_from_slice(&scsi::encode_lun(lun));
    p.set_itt(itt);
    p.set_word(20, edtl);
    p.set_word(24, seq.cmd_sn);
    p.set_word(28, seq.exp_stat_sn);
    let cdb = cmd.cdb();
    let slot = p.bhs.get_mut(32..32 + cdb.len()).ok_or_else(|| Error::Protocol(format!("{} CDB longer than 16 bytes", cmd.name())))?;
    slot.copy_from_slice(&cdb);
    Ok(p)
}

/// A NOP-Out answering a target's NOP-In ping (no data, immediate, does not
/// advance CmdSN). It carries no SCSI command.
pub fn nop_out_reply(ping: &Pdu, seq: Seq) -> Pdu {
    let mut p = Pdu::new(op::NOP_OUT | 0x40);
    p.bhs[1] = 0x80;
    p.bhs[8..16].copy_from_slice(&ping.lun_field());
    p.set_itt(NO_TAG);
    p.set_word(20, ping.ttt());
    p.set_word(24, seq.cmd_sn);
    p.set_word(28, seq.exp_stat_sn);
    p
}

/// A Login Request (RFC 7143 11.12).
#[allow(clippy::too_many_arguments)]
pub fn login_request(isid: [u8; 6], tsih: u16, itt: u32, seq: Seq, transit: bool, csg: u8, nsg: u8, data: Vec<u8>) -> Pdu {
    let mut p = Pdu::new(op::LOGIN_REQUEST | 0x40);
    p.bhs[1] = if transit { 0x80 | ((csg & 3) << 2) | (nsg & 3) } else { (csg & 3) << 2 };
    p.bhs[8..14].copy_from_slice(&isid);
    p.bhs[14..16].copy_from_slice(&tsih.to_be_bytes());
    p.set_itt(itt);
    // CID 0.
    p.set_word(24, seq.cmd_sn);
    p.set_word(28, seq.exp_stat_sn);
    p.data = data;
    p
}

/// A Text Request (SendTargets, or continuing a long answer).
pub fn text_request(itt: u32, ttt: u32, seq: Seq, data: Vec<u8>) -> Pdu {
    let mut p = Pdu::new(op::TEXT_REQUEST | 0x40);
    p.bhs[1] = 0x80;
    p.set_itt(itt);
    p.set_word(20, ttt);
    p.set_word(24, seq.cmd_sn);
    p.set_word(28, seq.exp_stat_sn);
    p.data = data;
    p
}

/// A Logout Request closing the session.
pub fn logout_request(itt: u32, seq: Seq) -> Pdu {
    let mut p = Pdu::new(op::LOGOUT_REQUEST | 0x40);
    p.bhs[1] = 0x80;
    p.set_itt(itt);
    p.set_word(24, seq.cmd_sn);
    p.set_word(28, seq.exp_stat_sn);
    p
}

/// Fields of a SCSI Response PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiResponse {
    /// iSCSI response code (0: command completed at target).
    pub response: u8,
    pub status: u8,
    pub underflow: bool,
    pub overflow: bool,
    pub residual: u32,
}

impl ScsiResponse {
    pub fn parse(p: &Pdu) -> ScsiResponse {
        ScsiResponse {
            response: p.bhs[2],
            status: p.bhs[3],
            underflow: p.flags() & 0x02 != 0,
            overflow: p.flags() & 0x04 != 0,
            residual: p.word(44),
        }
    }
}

/// Sense data of a SCSI Response: a 2-byte length then the sense bytes.
pub fn response_sense(data: &[u8]) -> Option<scsi::Sense> {
    let len = usize::from(u16::from_be_bytes([*data.first()?, *data.get(1)?]));
    scsi::Sense::parse(data.get(2..2 + len)?)
}

/// Fields of a Data-In PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataIn {
    /// Status present (the command is complete; no SCSI Response follows).
    pub has_status: bool,
    pub status: u8,
    pub underflow: bool,
    pub residual: u32,
    pub buffer_offset: u32,
}

impl DataIn {
    pub fn parse(p: &Pdu) -> DataIn {
        DataIn {
            has_status: p.flags() & 0x01 != 0,
            status: p.bhs[3],
            underflow: p.flags() & 0x02 != 0,
            residual: p.word(44),
            buffer_offset: p.word(40),
        }
    }
}

/// Login Response fields (RFC 7143 11.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub csg: u8,
    pub nsg: u8,
    pub tsih: u16,
    pub status_class: u8,
    pub status_detail: u8,
}

impl LoginResponse {
    pub fn parse(p: &Pdu) -> Result<LoginResponse> {
        if p.opcode() != op::LOGIN_RESPONSE {
            return Err(Error::Protocol(format!("expected a Login Response, got opcode {:#04x}", p.opcode())));
        }
        Ok(LoginResponse {
            transit: p.flags() & 0x80 != 0,
            csg: (p.flags() >> 2) & 3,
            nsg: p.flags() & 3,
            tsih: u16::from_be_bytes([p.bhs[14], p.bhs[15]]),
            status_class: p.bhs[36],
            status_detail: p.bhs[37],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: Seq = Seq { cmd_sn: 7, exp_stat_sn: 9 };

    fn every_command() -> Vec<ReadOnlyCommand> {
        vec![
            ReadOnlyCommand::TestUnitReady,
            ReadOnlyCommand::Inquiry { alloc: 96 },
            ReadOnlyCommand::InquiryVpd { page: 0x83, alloc: 255 },
            ReadOnlyCommand::ReadCapacity16 { alloc: 32 },
            ReadOnlyCommand::ReportLuns { alloc: 4096 },
            ReadOnlyCommand::Read16 { lba: 1 << 33, blocks: 256 },
        ]
    }

    /// Opcodes of SCSI commands that change a medium (SBC/SPC): none may
    /// ever appear in a CDB this initiator sends.
    const WRITE_OPCODES: [u8; 20] = [
        0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x41, 0x93, 0x42, 0x04, 0x15, 0x55, 0x5f, 0x3b, 0x35, 0x91, 0x89, 0x7f, 0x3f,
    ];

    #[test]
    fn scsi_commands_never_write() {
        for c in every_command() {
            let p = scsi_command(1, SEQ, 3, &c, 512).unwrap();
            let wire = p.encode().unwrap();
            assert_eq!(wire.len(), BHS_LEN, "{c:?}: no AHS, no immediate data");
            assert_eq!(wire[0] & 0x3f, op::SCSI_COMMAND);
            assert_eq!(wire[1] & 0x20, 0, "{c:?}: W bit set");
            assert_eq!(&wire[5..8], &[0, 0, 0], "{c:?}: immediate data");
            assert!(!WRITE_OPCODES.contains(&wire[32]), "{c:?}: write opcode {:#x}", wire[32]);
            assert_eq!(wire[1] & 0x40 != 0, c.data_in_len(512) > 0, "{c:?}: R bit");
            assert_eq!(u32::from_be_bytes([wire[20], wire[21], wire[22], wire[23]]) as u64, c.data_in_len(512));
        }
    }

    #[test]
    fn encode_decode_round_trip_with_padding() {
        let mut p = text_request(5, NO_TAG, SEQ, b"SendTargets=All\0".to_vec());
        p.data.push(b'x');
        let w = p.encode().unwrap();
        assert_eq!(w.len() % 4, 0);
        let (q, used) = Pdu::decode(&w, 8192).unwrap();
        assert_eq!(used, w.len());
        assert_eq!(q.data, p.data);
        assert!(Pdu::decode(&w[..w.len() - 1], 8192).is_err());
        assert!(Pdu::decode(&w, 4).is_err());
    }

    #[test]
    fn sense_in_response_data() {
        let mut d = vec![0, 18, 0x70, 0, 0x06];
        d.resize(20, 0);
        d[14] = 0x29;
        let s = response_sense(&d).unwrap();
        assert!(s.is_unit_attention());
        assert_eq!(response_sense(&[0, 40, 0x70]), None);
    }
}
