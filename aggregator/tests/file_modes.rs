//! Issue 11 item 9: the database (the register holds contacts' names, phone numbers and
//! e-mail) was created 0644 in a 0755 directory. A real aggregator on a new data directory
//! creates it 0700 and every file in it 0600, SQLite's `-wal` and `-shm` included; a data
//! directory and database left open by an older build are tightened at start. (The agent's
//! buffer directory: `agent/src/publish/commands.rs`,
//! `the_buffer_directory_and_its_files_are_private`.)

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_protocol::*;

fn config(data_dir: &Path) -> AggregatorConfig {
    let mut c = AggregatorConfig {
        data_dir: data_dir.to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    c.broker.listen = "127.0.0.1:0".parse().unwrap();
    c
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every entry of `dir` with its mode in octal, by name.
fn modes(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = format!("{:04o}", mode(&e.path()));
            (e.file_name().into_string().unwrap(), m)
        })
        .collect();
    out.sort();
    out
}

/// Store something through the storage thread: one acknowledged report.
async fn store_a_report(agg: &Aggregator) {
    let mqtt = agg.mqtt_addr.unwrap();
    let mut opts = MqttOptions::new(topics::client_id("h1"), mqtt.ip().to_string(), mqtt.port());
    opts.set_credentials(
        "h1",
        agg.master
            .node_key("h1", yunjian_protocol::Role::Host)
            .mqtt_password(),
    );
    let (client, mut ev) = AsyncClient::new(opts, 10);
    let env = Envelope::new(
        "h1",
        1,
        1_795_000_000_000,
        Body::Event(yunjian_protocol::Event {
            severity: Severity::Info,
            code: "test".into(),
            message: "file modes".into(),
        }),
    );
    client
        .publish(
            topics::report("h1"),
            QoS::AtLeastOnce,
            false,
            encode(
                &env,
                &agg.master.node_key("h1", yunjian_protocol::Role::Host),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return,
            Ok(Ok(_)) => {}
            other => panic!("no PUBACK: {other:?}"),
        }
    }
}

/// What the data directory holds while the aggregator runs.
fn private() -> Vec<(String, String)> {
    [
        "master.key",
        "yunjian.db",
        "yunjian.db-shm",
        "yunjian.db-wal",
    ]
    .map(|n| (n.to_string(), "0600".to_string()))
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_directory_is_0700_and_every_file_in_it_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("var/lib/yunjian");
    let agg = Aggregator::start(&config(&data)).await.unwrap();
    store_a_report(&agg).await;
    // while running: the database with its write-ahead log and shared-memory index
    assert_eq!(format!("{:04o}", mode(&data)), "0700");
    assert_eq!(modes(&data), private());
    agg.shutdown().await;
    for (name, m) in modes(&data) {
        assert_eq!(m, "0600", "{name} after a clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_left_open_by_an_older_build_is_tightened() {
    use std::fs::Permissions;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // what an older build left: the directory 0755, the database and its files 0644 (the
    // files kept open here so that the -wal and -shm stay, as after a crash)
    let older = rusqlite::Connection::open(data.join("yunjian.db")).unwrap();
    older.pragma_update(None, "journal_mode", "WAL").unwrap();
    older
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
    for f in ["yunjian.db", "yunjian.db-wal", "yunjian.db-shm"] {
        std::fs::set_permissions(data.join(f), Permissions::from_mode(0o644)).unwrap();
    }
    let agg = Aggregator::start(&config(&data)).await.unwrap();
    store_a_report(&agg).await;
    assert_eq!(format!("{:04o}", mode(&data)), "0700");
    assert_eq!(modes(&data), private());
    agg.shutdown().await;
    drop(older);
}
