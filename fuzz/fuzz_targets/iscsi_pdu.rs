//! The iSCSI initiator's parsers of target input: PDU framing (lengths,
//! AHS, padding), Login/SCSI/Data-In response fields, sense data, text
//! keys, SendTargets answers and CHAP values. None may panic or allocate
//! beyond the caps, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = iscsi::text::decode(data);
    let _ = iscsi::discovery::parse_send_targets(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = iscsi::login::unhex(s);
        let _ = iscsi::IscsiUrl::parse(s);
        let _ = iscsi::Portal::parse(s);
    }
    let mut rest = data;
    while let Ok((pdu, used)) = iscsi::pdu::Pdu::decode(rest, 1 << 18) {
        let _ = iscsi::pdu::LoginResponse::parse(&pdu);
        let _ = iscsi::pdu::ScsiResponse::parse(&pdu);
        let _ = iscsi::pdu::DataIn::parse(&pdu);
        let _ = iscsi::pdu::response_sense(&pdu.data);
        if let Ok(keys) = iscsi::text::decode(&pdu.data) {
            let _ = iscsi::text::number(&keys, "MaxRecvDataSegmentLength");
        }
        rest = rest.get(used..).unwrap_or_default();
        if used == 0 {
            break;
        }
    }
});
