//! Exact-bytes tests: they pin the wire layout. If one fails you changed the wire; read the
//! evolution rules in the crate docs before updating the expected bytes.

use yunjian_protocol::*;

fn key() -> NodeKey {
    MasterKey::from_bytes([0x42; 32]).node_key("h1", Role::Host)
}

/// A typical host report: 2 cores, memory, 4 filesystems, 2 NICs.
fn typical_host_report() -> Envelope {
    let disk = |mount: &str, total: u64, used: u64| DiskSample {
        mount: mount.into(),
        total_kib: total,
        used_kib: used,
        read_bps: 1_250_000,
        write_bps: 3_400_000,
    };
    let nic = |name: &str| NetSample {
        name: name.into(),
        rx_bytes: 987_654_321_012,
        tx_bytes: 123_456_789_012,
        rx_bps: 12_500_000,
        tx_bps: 4_200_000,
    };
    Envelope::new(
        "gx-nn-r07-h12",
        1_234_567,
        1_795_000_000_123,
        Body::Report(Report {
            cpu_busy: 4_321,
            per_core: vec![4_000, 4_642, 3_900, 4_700, 4_100, 4_800, 4_200, 4_400],
            load: [312, 287, 251],
            mem: Memory {
                total_kib: 263_921_256,
                used_kib: 181_234_567,
                available_kib: 82_686_689,
                swap_total_kib: 8_388_604,
                swap_used_kib: 1_024,
            },
            disks: vec![
                disk("/", 102_687_672, 40_123_456),
                disk("/var", 205_375_344, 150_234_567),
                disk("/data", 3_845_579_776, 2_900_123_456),
                disk("/backup", 3_845_579_776, 1_000_000_000),
            ],
            nets: vec![nic("eth0"), nic("eth1")],
            uptime_s: 31_536_000,
            failed: vec![],
        }),
    )
}

#[test]
fn typical_host_report_fits_the_256_byte_budget() {
    let frame = encode(&typical_host_report(), &key()).unwrap();
    assert!(
        frame.len() <= 256,
        "a typical host report is {} bytes on the wire, budget 256",
        frame.len()
    );
    // Pin the size too, so growth is a conscious decision.
    assert_eq!(frame.len(), 226);
}

#[test]
fn report_roundtrips_and_verifies() {
    let env = typical_host_report();
    let frame = encode(&env, &key()).unwrap();
    assert_eq!(decode(&frame, "gx-nn-r07-h12", &key()).unwrap(), env);
}

#[test]
fn golden_status_bytes() {
    let env = Envelope::new("h1", 0, 1_700_000_000_000, Body::Status(Status::Offline));
    let frame = encode(&env, &key()).unwrap();
    let (signed, _mac) = frame.split_at(frame.len() - MAC_LEN);
    assert_eq!(
        signed,
        &[
            2, // version
            2, b'h', b'1', // node: len + bytes
            0,    // seq
            0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, // ts_ms varint
            6,    // Body::Status
            1,    // Status::Offline
        ]
    );
}

#[test]
fn golden_hello_bytes() {
    let env = Envelope::new(
        "h1",
        1,
        5,
        Body::Hello(Hello {
            agent_version: "0.1".into(),
            role: Role::Guest,
            interval_ms: 10_000,
            buffered: 3,
            epoch: 1,
        }),
    );
    let frame = encode(&env, &key()).unwrap();
    let (signed, _) = frame.split_at(frame.len() - MAC_LEN);
    assert_eq!(
        signed,
        &[2, 2, b'h', b'1', 1, 5, 0, 3, b'0', b'.', b'1', 1, 0x90, 0x4e, 3, 1]
    );
}

/// A version-1 hello (before the epoch) still decodes, with epoch 0 and its own version.
#[test]
fn version_1_hello_decodes_without_an_epoch() {
    let signed = [
        1, 2, b'h', b'1', 1, 5, 0, 3, b'0', b'.', b'1', 1, 0x90, 0x4e, 3,
    ];
    let mut frame = signed.to_vec();
    frame.extend_from_slice(&key().mac(&signed));
    let env = decode(&frame, "h1", &key()).unwrap();
    assert_eq!(env.version, 1);
    assert_eq!(
        env.body,
        Body::Hello(Hello {
            agent_version: "0.1".into(),
            role: Role::Guest,
            interval_ms: 10_000,
            buffered: 3,
            epoch: 0,
        })
    );
    // a version-1 frame of any other kind is read as it always was
    let mut report = encode(&typical_host_report(), &key()).unwrap();
    report.truncate(report.len() - MAC_LEN);
    report[0] = 1;
    let tag = key().mac(&report);
    report.extend_from_slice(&tag);
    let old = decode(&report, "gx-nn-r07-h12", &key()).unwrap();
    assert_eq!(old.version, 1);
    assert_eq!(old.body, typical_host_report().body);
    // re-encoded, an old envelope is written in today's layout under today's version
    let hello_v1 = decode(&frame, "h1", &key()).unwrap();
    let again = encode(&hello_v1, &key()).unwrap();
    assert_eq!(again[0], PROTOCOL_VERSION);
    let back = decode(&again, "h1", &key()).unwrap();
    assert_eq!((back.version, back.body), (PROTOCOL_VERSION, hello_v1.body));
}

#[test]
fn golden_command_bytes() {
    let env = Envelope::new(
        "h1",
        0,
        1,
        Body::Command(Command {
            id: [9; 16],
            expires_ms: 2,
            action: Action::Ping,
        }),
    );
    let frame = encode(&env, &key()).unwrap();
    let (signed, _) = frame.split_at(frame.len() - MAC_LEN);
    let mut expected = vec![2, 2, b'h', b'1', 0, 1, 4];
    expected.extend([9u8; 16]);
    expected.extend([2, 0]);
    assert_eq!(signed, &expected[..]);
}

/// `Body::Antivirus` is variant 8, appended after `Guests`: the bytes of every older variant
/// stay as they were.
#[test]
fn golden_antivirus_bytes() {
    let env = Envelope::new(
        "h1",
        7,
        1,
        Body::Antivirus(AntivirusReport {
            products: vec![AntivirusProduct {
                profile: "av".into(),
                package: Some(AntivirusPackage {
                    name: "av".into(),
                    version: "1.0".into(),
                    state: PackageState::Changing,
                }),
                paths: vec![],
                unit: Some(AntivirusUnit {
                    name: "av".into(),
                    enabled: true,
                }),
                processes: vec!["avd".into()],
                version: None,
                signatures_s: Some(1_700_000_000),
            }],
            errors: vec!["x".into()],
        }),
    );
    let frame = encode(&env, &key()).unwrap();
    let (signed, _) = frame.split_at(frame.len() - MAC_LEN);
    assert_eq!(
        signed,
        &[
            2, 2, b'h', b'1', 7, 1, // version, node, seq, ts_ms
            8, // Body::Antivirus
            1, // one product
            2, b'a', b'v', // profile
            1, 2, b'a', b'v', 3, b'1', b'.', b'0', 1, // Some(package), PackageState::Changing
            0, // no paths
            1, 2, b'a', b'v', 1, // Some(unit), enabled
            1, 3, b'a', b'v', b'd', // one process
            0,    // no version file
            1, 0x80, 0xe2, 0xcf, 0xaa, 0x06, // Some(signatures_s) varint
            1, 1, b'x', // one error
        ]
    );
    assert_eq!(decode(&frame, "h1", &key()).unwrap(), env);
    assert_eq!(env.body.kind(), "antivirus");
}

#[test]
fn garbage_truncated_and_wrong_version_get_typed_errors() {
    let k = key();
    let frame = encode(&typical_host_report(), &k).unwrap();
    let node = "gx-nn-r07-h12";

    assert_eq!(decode(&[], node, &k), Err(FrameError::Empty));
    let mut v3 = frame.clone();
    v3[0] = 3;
    assert_eq!(
        decode(&v3, node, &k),
        Err(FrameError::UnknownVersion { found: 3 })
    );
    let mut v0 = frame.clone();
    v0[0] = 0;
    assert_eq!(
        decode(&v0, node, &k),
        Err(FrameError::UnknownVersion { found: 0 })
    );
    assert!(matches!(
        decode(&frame[..40], node, &k),
        Err(FrameError::Truncated(_) | FrameError::Malformed(_))
    ));
    assert!(matches!(
        decode(&frame[..10], node, &k),
        Err(FrameError::Truncated(_))
    ));
    let garbage: Vec<u8> = std::iter::once(1u8)
        .chain((0..200u32).map(|i| (i * 37 % 251) as u8 | 0x80))
        .collect();
    let e = decode(&garbage, node, &k).unwrap_err();
    assert!(
        matches!(e, FrameError::Malformed(_) | FrameError::Truncated(_)),
        "{e:?}"
    );
    let big = vec![1u8; MAX_FRAME_LEN + 1];
    assert!(matches!(
        decode(&big, node, &k),
        Err(FrameError::Oversized { .. })
    ));
}

#[test]
fn another_nodes_key_or_topic_is_rejected() {
    let env = typical_host_report();
    let frame = encode(&env, &key()).unwrap();
    // signed by h1's key but verified with the topic node's key
    let other = MasterKey::from_bytes([0x42; 32]).node_key("gx-nn-r07-h12", Role::Host);
    assert_eq!(
        decode(&frame, "gx-nn-r07-h12", &other),
        Err(FrameError::BadMac)
    );
    // correct key, but published on another node's topic
    assert!(matches!(
        decode(&frame, "h1", &key()),
        Err(FrameError::NodeMismatch { .. })
    ));
    // one flipped bit anywhere in the signed part
    let mut t = frame.clone();
    t[30] ^= 1;
    assert!(decode(&t, "gx-nn-r07-h12", &key()).is_err());
}

#[test]
fn every_error_kind_is_listed() {
    for e in [
        FrameError::Empty,
        FrameError::Oversized { len: 1, max: 0 },
        FrameError::UnknownVersion { found: 9 },
        FrameError::Truncated(String::new()),
        FrameError::Malformed(String::new()),
        FrameError::TrailingBytes(1),
        FrameError::BadMac,
        FrameError::NodeMismatch {
            envelope: String::new(),
            topic: String::new(),
        },
    ] {
        assert!(FrameError::KINDS.contains(&e.kind()));
    }
}

#[test]
fn golden_hardware_bytes() {
    use yunjian_protocol::hardware::*;
    let env = Envelope::new(
        "h1",
        7,
        1,
        Body::Hardware(HardwareReport {
            bmc: BmcState::Ok("lan".into()),
            chassis: Some(ChassisState {
                power_on: true,
                power_fault: false,
                intrusion: false,
                drive_fault: false,
                cooling_fault: true,
            }),
            sensors: vec![SensorReading {
                name: "T".into(),
                number: 1,
                sensor_type: 0x01,
                value: Some(45_500),
                unit: "C".into(),
                status: SensorStatus::Critical,
                thresholds: Thresholds {
                    upper_critical: Some(40_000),
                    ..Thresholds::default()
                },
                states: 0,
            }],
            sel: vec![SelEntry {
                record_id: 3,
                ts_s: 300,
                sensor_type: 0x01,
                sensor_number: 1,
                sensor: Some("T".into()),
                event_type: 0x01,
                asserted: true,
                offset: 9,
                description: "UC".into(),
            }],
        }),
    );
    let frame = encode(&env, &key()).unwrap();
    let (signed, _) = frame.split_at(frame.len() - MAC_LEN);
    assert_eq!(
        signed,
        &[
            2, 2, b'h', b'1', 7, 1, // version, node, seq, ts_ms
            9, // Body::Hardware
            0, 3, b'l', b'a', b'n', // BmcState::Ok("lan")
            1, 1, 0, 0, 0, 1, // Some(chassis): on, cooling fault
            1, // one sensor
            1, b'T', 1, 0x01, // name, number, sensor type
            1, 0xf8, 0xc6, 0x05, // Some(45_500) zigzag varint
            1, b'C', 2, // unit, SensorStatus::Critical
            0, 0, 0, 0, 1, 0x80, 0xf1, 0x04, 0, // thresholds: only upper critical, 40_000
            0, // states
            1, // one SEL entry
            3, 0xac, 0x02, 0x01, 1, // record id, ts_s 300, sensor type, number
            1, 1, b'T', // Some("T")
            0x01, 1, 9, // event type, asserted, offset
            2, b'U', b'C', // description
        ]
    );
    assert_eq!(decode(&frame, "h1", &key()).unwrap(), env);
    assert_eq!(env.body.kind(), "hardware");
}

fn vm_ab() -> VmRef {
    VmRef {
        uuid: "u".into(),
        name: "a".into(),
    }
}

fn command_bytes(action: Action) -> Vec<u8> {
    let env = Envelope::new(
        "h1",
        0,
        1,
        Body::Command(Command {
            id: [9; 16],
            expires_ms: 2,
            action,
        }),
    );
    let frame = encode(&env, &key()).unwrap();
    assert_eq!(decode(&frame, "h1", &key()).unwrap(), env);
    let (signed, _) = frame.split_at(frame.len() - MAC_LEN);
    // version, node, seq, ts_ms, Body::Command, id, expires_ms
    let mut head = vec![2, 2, b'h', b'1', 0, 1, 4];
    head.extend([9u8; 16]);
    head.push(2);
    assert_eq!(&signed[..head.len()], &head[..]);
    signed[head.len()..].to_vec()
}

/// `Action::Limit` is variant 7 and `Action::ReleaseAndWipe` variant 8, appended after
/// `Release`: the older actions keep their bytes (a `Release` is still 6).
#[test]
fn golden_limit_and_release_and_wipe_bytes() {
    assert_eq!(
        command_bytes(Action::Release(vm_ab())),
        [6, 1, b'u', 1, b'a']
    );
    let cap = VmLimits {
        vcpu_percent: Some(50),
        disk_bytes_sec: Some(10_485_760),
        disk_iops_sec: None,
    };
    assert_eq!(
        command_bytes(Action::Limit(vm_ab(), cap)),
        [
            7, // Action::Limit
            1, b'u', 1, b'a', // VmRef
            1, 50, // Some(50) %
            1, 0x80, 0x80, 0x80, 0x05, // Some(10 MiB/s) varint
            0,    // no IOPS cap
        ]
    );
    // lifting every cap: the same action with no caps
    assert_eq!(
        command_bytes(Action::Limit(vm_ab(), VmLimits::NONE)),
        [7, 1, b'u', 1, b'a', 0, 0, 0]
    );
    assert_eq!(cap.vcpu_quota_us(), Some(50_000));
    assert!(VmLimits::NONE.is_none() && !cap.is_none());
    assert_eq!(
        command_bytes(Action::ReleaseAndWipe(vm_ab())),
        [8, 1, b'u', 1, b'a']
    );
    assert_eq!(Action::Limit(vm_ab(), cap).kind(), "limit");
    assert_eq!(Action::ReleaseAndWipe(vm_ab()).kind(), "release_wipe");
    assert_eq!(Action::ReleaseAndWipe(vm_ab()).vm(), Some(&vm_ab()));
}

/// `Body::CommandEvidence` is variant 10, appended after `Hardware`.
#[test]
fn golden_command_evidence_bytes() {
    let volume = VolumeInfo {
        pool: "p".into(),
        name: "v".into(),
        capacity_bytes: 1 << 30,
    };
    let evidence = WipeEvidence {
        vm: vm_ab(),
        disks: vec![
            DiskWipe {
                target: "vda".into(),
                source: "/p/v".into(),
                state: DiskWipeState::Wiped {
                    volume: volume.clone(),
                    algorithm: WipeAlgorithm::Zero,
                    wiped_ms: 5,
                    deleted: true,
                },
            },
            DiskWipe {
                target: "vdb".into(),
                source: "/f".into(),
                state: DiskWipeState::NotWipeable("x".into()),
            },
            DiskWipe {
                target: "vdc".into(),
                source: String::new(),
                state: DiskWipeState::NotWiped(volume, "y".into()),
            },
        ],
    };
    assert!(!evidence.complete());
    let env = Envelope::new(
        "h1",
        7,
        1,
        Body::CommandEvidence(CommandEvidence {
            id: [3; 16],
            evidence: Evidence::Wipe(evidence),
        }),
    );
    let frame = encode(&env, &key()).unwrap();
    let (signed, _) = frame.split_at(frame.len() - MAC_LEN);
    let mut expected = vec![2, 2, b'h', b'1', 7, 1, 10]; // Body::CommandEvidence
    expected.extend([3u8; 16]);
    expected.extend([
        0, // Evidence::Wipe
        1, b'u', 1, b'a', // the VM
        3,    // three disks
        3, b'v', b'd', b'a', 4, b'/', b'p', b'/', b'v', // target, source
        2,    // DiskWipeState::Wiped
        1, b'p', 1, b'v', 0x80, 0x80, 0x80, 0x80, 0x04, // volume: pool, name, 1 GiB
        0, 5, 1, // WipeAlgorithm::Zero, wiped_ms, deleted
        3, b'v', b'd', b'b', 2, b'/', b'f', // target, source
        0, 1, b'x', // DiskWipeState::NotWipeable("x")
        3, b'v', b'd', b'c', 0, // target, no source
        1, 1, b'p', 1, b'v', 0x80, 0x80, 0x80, 0x80, 0x04, 1, b'y', // NotWiped(volume, "y")
    ]);
    assert_eq!(signed, &expected[..]);
    assert_eq!(decode(&frame, "h1", &key()).unwrap(), env);
    assert_eq!(env.body.kind(), "command_evidence");
    assert_eq!(WipeAlgorithm::Zero.as_str(), "zero");
}
