//! Every committed input of the fuzz targets (`fuzz/corpus/<target>/`: the seeds and every
//! input a fuzz run found a crash with, minimised) through the targets' own entry functions,
//! on stable Rust, so a decoder that regresses on one fails `cargo test`. The fuzzing itself
//! is `scripts/fuzz.sh` (nightly, libFuzzer); docs/FUZZING.md.
//!
//! `cargo test -p yunjian-tests --test fuzz_corpus -- --ignored write_seeds` writes the seeds
//! again (real frames, MQTT packets, forms, SDR and SEL records).

#[path = "../../fuzz/src/lib.rs"]
mod entries;

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn every_committed_fuzz_input_decodes_without_a_panic() {
    let mut failed = Vec::new();
    for (target, run) in entries::TARGETS {
        let dir = corpus().join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "{target}: no corpus in {}",
            dir.display()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
}

#[test]
fn every_corpus_folder_has_its_target() {
    for entry in std::fs::read_dir(corpus()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            entries::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} has no target in fuzz/src/lib.rs"
        );
    }
}

/// The seeds: what each decoder gets in real use.
#[test]
#[ignore = "writes fuzz/corpus: run by hand to regenerate the seeds"]
fn write_seeds() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };

    // frames: a hello and a guest list, signed with the target's key
    use yunjian_protocol::{Body, Envelope, GuestView, Hello, NodeKey, Role};
    let key = NodeKey::from_bytes([0x5a; 32]);
    let hello = Body::Hello(Hello {
        agent_version: "0.1.0".into(),
        role: Role::Host,
        interval_ms: 10_000,
        buffered: 3,
        epoch: 7,
    });
    let guests = Body::Guests(vec![GuestView {
        uuid: "4c4c4544-0042-3510-8058-b4c04f384d32".into(),
        name: "oa-app-01".into(),
        vcpus: 8,
        mem_kib: 16 << 20,
        disk_kib: 360 << 20,
        running: true,
    }]);
    for (name, body) in [("hello", hello), ("guests", guests)] {
        let frame =
            yunjian_protocol::encode(&Envelope::new("h1", 7, 1_700_000_000_000, body), &key)
                .unwrap();
        write("protocol_frame", name, &frame);
    }

    // MQTT: an operator's session and an agent's, each a whole stream after the mode byte
    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{Connect, Disconnect, Login, PingReq, Publish, Subscribe};
    use rumqttc::mqttbytes::QoS;
    let session = |mode: u8, client: &str, login: Option<(&str, &str)>, topic: &str| {
        let mut b = BytesMut::new();
        let mut c = Connect::new(client);
        c.login = login.map(|(u, p)| Login::new(u, p));
        c.write(&mut b).unwrap();
        Subscribe::new("yunjian/v1/h1/cmd", QoS::AtLeastOnce)
            .write(&mut b)
            .unwrap();
        let mut p = Publish::new(topic, QoS::AtLeastOnce, vec![1u8, 2, 3]);
        p.pkid = 1;
        p.write(&mut b).unwrap();
        PingReq.write(&mut b).unwrap();
        Disconnect.write(&mut b).unwrap();
        let mut out = vec![mode];
        out.extend_from_slice(&b);
        out
    };
    let operator = session(
        0x45,
        "tool",
        Some(("operator", "fuzz-operator")),
        "yunjian/v1/h1/report",
    );
    write("broker_packets", "operator", &operator);
    let agent = session(0x3F, "yj-h1", None, "yunjian/v1/h1/report");
    write("broker_packets", "agent", &agent);

    // forms: the register's own export of two VMs, a hand-written sheet, a corner workbook
    use yunjian_aggregator_core::register::{export, form, test_support};
    let a = test_support::vm("市财政局", "4c4c4544-0042-3510-8058-b4c04f384d32", 8);
    let b = test_support::vm("市财政局", "4c4c4544-0042-3510-8058-b4c04f384d33", 4);
    write(
        "register_xlsx",
        "export",
        &export::to_xlsx(&[&a, &b]).unwrap(),
    );
    let rows = r#"<row r="1"><c r="A1"><v>1</v></c></row><row r="1048576"><c r="XFD1048576"><v>1</v></c></row>"#;
    let corner = test_support::xlsx_with(&[(
        "xl/worksheets/sheet1.xml",
        &test_support::sheet_xml("A1", rows),
    )]);
    write("register_xlsx", "corner", &corner);
    // a sheet as Excel writes it (shared strings after the 0xFF) and one with inline strings
    let header = [
        "网络分区",
        "系统名称",
        "子系统名称",
        "服务器类型",
        "vCPU核",
        "内存GB",
        "系统盘GB",
        "数据盘GB",
    ];
    let shared_cells: String = (0..header.len())
        .map(|i| {
            format!(
                r#"<c r="{}3" t="s"><v>{i}</v></c>"#,
                (b'C' + i as u8) as char
            )
        })
        .collect();
    let vm = r#"<row r="5"><c r="C5" t="inlineStr"><is><t>政务外网</t></is></c><c r="E5" t="inlineStr"><is><t>OA</t></is></c><c r="F5" t="inlineStr"><is><t>APP</t></is></c><c r="G5"><v>8</v></c><c r="H5"><v>16.0</v></c><c r="I5"><v>60</v></c><c r="J5"><v>0</v></c></row>"#;
    let mut sheet =
        test_support::sheet_xml("C3:J5", &format!(r#"<row r="3">{shared_cells}</row>{vm}"#));
    let strings: String = header
        .iter()
        .map(|h| format!("<si><t>{h}</t></si>"))
        .collect();
    sheet.push(0xFF);
    sheet.extend_from_slice(
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="8" uniqueCount="8">{strings}</sst>"#).as_bytes(),
    );
    write("register_sheet", "shared-strings", &sheet);
    let (xml, sst) = sheet.split_at(sheet.iter().position(|&b| b == 0xFF).unwrap());
    let book = test_support::xlsx_with(&[
        ("xl/worksheets/sheet1.xml", xml),
        ("xl/sharedStrings.xml", &sst[1..]),
    ]);
    let rows = form::read("seed.xlsx", form::Format::Xlsx, &book).unwrap();
    assert_eq!(rows.len(), 1, "the seed is a form");
    let inline: String = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                r#"<c r="{}3" t="inlineStr"><is><t>{h}</t></is></c>"#,
                (b'C' + i as u8) as char
            )
        })
        .collect();
    let sheet = test_support::sheet_xml("C3:J5", &format!(r#"<row r="3">{inline}</row>{vm}"#));
    write("register_sheet", "inline-strings", &sheet);
    let csv = "云资源使用需求表,,,\n序号,网络分区,开发商,系统名称,子系统名称,服务器类型,\"堡垒机账  号\n负责人\",堡垒机账号负责人邮箱,堡垒机账号负责人手机号码,vCPU核,内存GB,系统盘GB,数据盘GB,操作系统,集群部署,集群组号,备注,虚拟机UUID\n1,公共网络区,华为,,财务管理系统,APP,张三,zhangsan@sohu.com,13800000000,8,16,60,300,CentOS 7.0,是,集群1,　,4C4C4544-0042-3510-8058-B4C04F384D32\n2,互联网区,华为,OA,,web,李四,lisi@163.com,+86 139-8888-8888,４,8.0,60,,,否,,\"说\"\"明\"\"\",\n";
    write("register_csv", "utf8", format!("\u{feff}{csv}").as_bytes());
    let (gbk, _, _) = encoding_rs::GB18030.encode(csv);
    write("register_csv", "gb18030", &gbk);

    // IPMI: records as OpenIPMI's sdrcomp compiles them (agent/src/ipmi/sdr.rs tests)
    const CPU_TEMP: [u8; 56] = [
        0x03, 0x00, 0x51, 0x01, 0x33, 0x20, 0x00, 0x01, 0x03, 0x01, 0x67, 0x44, 0x01, 0x01, 0x80,
        0x0a, 0x80, 0x7a, 0x38, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x64, 0x5a, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xc8, 0x43, 0x50, 0x55, 0x20, 0x54, 0x65, 0x6d, 0x70,
    ];
    const PSU_STATUS: [u8; 43] = [
        0x07, 0x00, 0x51, 0x02, 0x26, 0x20, 0x00, 0x05, 0x0a, 0x01, 0x67, 0x40, 0x08, 0x6f, 0x03,
        0x00, 0x03, 0x00, 0x0f, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xcb, 0x50, 0x53, 0x55, 0x31, 0x20, 0x53, 0x74, 0x61, 0x74, 0x75, 0x73,
    ];
    const WATCHDOG: [u8; 25] = [
        0x02, 0x00, 0x51, 0x03, 0x14, 0x20, 0x00, 0x00, 0x07, 0x01, 0x23, 0x6f, 0x00, 0x00, 0x00,
        0x00, 0xc8, 0x57, 0x61, 0x74, 0x63, 0x68, 0x64, 0x6f, 0x67,
    ];
    write("ipmi_sdr", "full-cpu-temp", &CPU_TEMP);
    write("ipmi_sdr", "compact-psu", &PSU_STATUS);
    write("ipmi_sdr", "event-only-watchdog", &WATCHDOG);
    let sel = [
        0x03, 0x00, 0x02, 0x4e, 0x01, 0x00, 0x00, 0x20, 0x00, 0x04, 0x01, 0x01, 0x01, 0x59, 0x5b,
        0x5a, 0x05, 0x00, 0x02, 0x4f, 0x01, 0x00, 0x00, 0x20, 0x00, 0x04, 0x08, 0x05, 0xef, 0x01,
        0xff, 0xff,
    ];
    write("ipmi_sel", "threshold-and-psu", &sel);
    // replies: a reservation, an SDR chunk, SEL info, a reading, thresholds, an SEL entry
    write("ipmi_replies", "reserve", &[0, 0x34, 0x12]);
    let mut chunk = vec![1, 0x04, 0x00];
    chunk.extend_from_slice(&CPU_TEMP[..16]);
    write("ipmi_replies", "sdr-chunk", &chunk);
    write(
        "ipmi_replies",
        "sel-info",
        &[
            6, 0x51, 2, 0, 0x00, 0x10, 0x4e, 0x01, 0, 0, 0x4f, 0x01, 0, 0,
        ],
    );
    write("ipmi_replies", "reading", &[3, 0x2d, 0xc0, 0x00, 0x00]);
    write(
        "ipmi_replies",
        "thresholds",
        &[4, 0x3f, 0, 0, 0, 0x50, 0x5a, 0x64],
    );
    let mut entry = vec![7, 0x05, 0x00];
    entry.extend_from_slice(&sel[..16]);
    write("ipmi_replies", "sel-entry", &entry);
}
