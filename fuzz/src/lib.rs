//! The fuzz targets' entry functions: one per decoder of untrusted bytes, each taking the raw
//! input. The targets in `fuzz_targets/` call them under libFuzzer (`scripts/fuzz.sh`); the
//! workspace test `tests/tests/fuzz_corpus.rs` includes this file and replays every committed
//! input of `fuzz/corpus/<target>/` through the same functions on stable Rust.
//!
//! A function returns normally for any input; a panic, an abort or an allocation past
//! libFuzzer's limit is the finding.

use bytes::BytesMut;
use ipmi_rs::connection::IpmiCommand;
use rumqttc::mqttbytes::v4::{
    self, ConnAck, ConnectReturnCode, Packet, SubAck, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{valid_filter, valid_topic, Error as CodecError};
use yunjian_agent::ipmi::{commands, sdr::SensorDef, sel};
use yunjian_aggregator_core::register::form::{self, Format};
use yunjian_aggregator_core::register::test_support;
use yunjian_broker::acl::{self, Principal};
use yunjian_protocol::{MasterKey, NodeKey};

/// A target: its name (of its `fuzz_targets/` file and its corpus folder) and its entry.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("protocol_frame", protocol_frame),
    ("broker_packets", broker_packets),
    ("register_xlsx", register_xlsx),
    ("register_sheet", register_sheet),
    ("register_csv", register_csv),
    ("ipmi_sdr", ipmi_sdr),
    ("ipmi_sel", ipmi_sel),
    ("ipmi_replies", ipmi_replies),
];

/// A frame as ingest gets it from the broker: `decode` with a node's key (the envelope is
/// parsed before the MAC is checked), and `decode_unverified`. What decodes re-encodes to a
/// frame that decodes and re-encodes to the same bytes.
pub fn protocol_frame(data: &[u8]) {
    let key = NodeKey::from_bytes([0x5a; 32]);
    let _ = yunjian_protocol::decode(data, "h1", &key);
    let Ok(env) = yunjian_protocol::decode_unverified(data) else {
        return;
    };
    let Ok(frame) = yunjian_protocol::encode(&env, &key) else {
        return;
    };
    let again = yunjian_protocol::decode(&frame, &env.node, &key)
        .expect("a frame this build encoded decodes with its key");
    let reencoded = yunjian_protocol::encode(&again, &key).expect("it encodes again");
    assert_eq!(frame, reencoded, "decode and encode are not inverse");
}

/// The embedded broker's read path on bytes from a socket: the first byte sets the read size
/// (low 6 bits + 1: the bytes arrive in reads of that size), whether agents must log in (bit
/// 6) and whether anonymous clients may (bit 7); the rest is the stream. As in
/// `broker/src/conn.rs`: `v4::read` with the default packet limit over a growing buffer, the
/// first packet must be CONNECT and passes `acl::login`, then PUBLISH and SUBSCRIBE meet the
/// topic checks and the ACL and the broker's answers are written.
pub fn broker_packets(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(mode & 0x3F) + 1;
    let require_login = mode & 0x40 != 0;
    let allow_anonymous = mode & 0x80 != 0;
    let max = yunjian_broker::BrokerConfig::default().max_packet_bytes;
    let master = MasterKey::from_bytes([0x11; 32]);
    let mut rbuf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    let mut who: Option<Principal> = None;
    for part in stream.chunks(chunk) {
        rbuf.extend_from_slice(part);
        loop {
            let packet = match v4::read(&mut rbuf, max) {
                Ok(p) => p,
                Err(CodecError::InsufficientBytes(_)) => break,
                Err(_) => return,
            };
            let Some(principal) = &who else {
                let Packet::Connect(c) = packet else {
                    return;
                };
                let login = acl::login(
                    &c.client_id,
                    c.login
                        .as_ref()
                        .map(|l| (l.username.as_str(), l.password.as_str())),
                    Some(&master),
                    require_login,
                    Some("fuzz-operator"),
                    allow_anonymous,
                );
                match login {
                    Ok(p) => {
                        if let Some(w) = &c.last_will {
                            let _ = acl::may_publish(&p, &w.topic) && valid_topic(&w.topic);
                        }
                        let _ = ConnAck::new(ConnectReturnCode::Success, false).write(&mut wbuf);
                        who = Some(p);
                    }
                    Err(_) => {
                        let code = ConnectReturnCode::NotAuthorized;
                        let _ = ConnAck::new(code, false).write(&mut wbuf);
                        return;
                    }
                }
                continue;
            };
            match packet {
                Packet::Publish(p) => {
                    if !valid_topic(&p.topic) {
                        return;
                    }
                    let _ = acl::may_publish(principal, &p.topic);
                }
                Packet::Subscribe(s) => {
                    let codes = s
                        .filters
                        .iter()
                        .map(|f| {
                            if valid_filter(&f.path) && acl::may_subscribe(principal, &f.path) {
                                SubscribeReasonCode::Success(f.qos)
                            } else {
                                SubscribeReasonCode::Failure
                            }
                        })
                        .collect();
                    let _ = SubAck::new(s.pkid, codes).write(&mut wbuf);
                }
                Packet::PingReq => {
                    let _ = v4::PingResp.write(&mut wbuf);
                }
                Packet::Disconnect => return,
                _ => {}
            }
            wbuf.clear();
        }
    }
}

/// A workbook uploaded to the register import.
pub fn register_xlsx(data: &[u8]) {
    let _ = form::read("fuzz.xlsx", Format::Xlsx, data);
}

/// A worksheet's XML (and, after a 0xFF byte, the shared strings' XML) in an otherwise real
/// workbook: the ZIP is written around the input, so what is fuzzed is the sheet reader and the
/// import's bounds rather than the ZIP's checksums (which refuse almost every mutation of a
/// whole `.xlsx`).
pub fn register_sheet(data: &[u8]) {
    let (sheet, strings) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let mut entries = vec![("xl/worksheets/sheet1.xml", sheet)];
    if let Some(s) = strings {
        entries.push(("xl/sharedStrings.xml", s));
    }
    let file = test_support::xlsx_with(&entries);
    let _ = form::read("fuzz.xlsx", Format::Xlsx, &file);
}

/// A CSV uploaded to the register import (UTF-8 or GB18030).
pub fn register_csv(data: &[u8]) {
    let _ = form::read("fuzz.csv", Format::Csv, data);
}

/// One SDR record from the BMC, then its conversions of every raw reading and some states.
pub fn ipmi_sdr(data: &[u8]) {
    let Ok(Some(def)) = SensorDef::parse(data) else {
        return;
    };
    for raw in 0..=u8::MAX {
        let _ = def.to_milli(raw);
    }
    for states in [0, 1, 0x3F, 0x7FFF, u16::MAX] {
        let _ = def.status(states);
    }
}

/// SEL records from the BMC, 16 bytes each.
pub fn ipmi_sel(data: &[u8]) {
    for record in data.chunks_exact(16) {
        let raw: &[u8; 16] = record.try_into().expect("16 bytes");
        let _ = sel::decode(raw, |owner, n| Some(format!("{owner}/{n}")));
    }
}

/// A BMC's reply data to one of the sweep's commands: the first byte picks the command.
pub fn ipmi_replies(data: &[u8]) {
    let Some((&which, reply)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            let _ = commands::ReserveSdrRepository::parse_success_response(reply);
        }
        1 => {
            let _ = commands::GetSdrChunk::parse_success_response(reply);
        }
        2 => {
            let _ = commands::GetSdrRepositoryInfo::parse_success_response(reply);
        }
        3 => {
            let _ = commands::GetSensorReading::parse_success_response(reply);
        }
        4 => {
            let _ = commands::GetSensorThresholds::parse_success_response(reply);
        }
        5 => {
            let _ = commands::GetChassisStatus::parse_success_response(reply);
        }
        6 => {
            let _ = commands::GetSelInfo::parse_success_response(reply);
        }
        _ => {
            let _ = commands::GetSelEntry::parse_success_response(reply);
        }
    }
}
