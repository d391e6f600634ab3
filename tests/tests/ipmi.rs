//! The agent's BMC sweep against a real BMC: OpenIPMI's `ipmi_sim` over RMCP+ on loopback
//! (`yunjian_tests::ipmi_sim`), checked against `ipmitool -I lanplus -C 3` on the same BMC.
//!
//! * every sensor equals, in value, unit and status, what `ipmitool sdr elist` prints, and
//!   its thresholds what `ipmitool sensor` prints;
//! * a power-supply failure set on the console shows in the sensor's states and status; a SEL
//!   entry appears once, and not again after an agent restart;
//! * the BMC killed and restarted: the sweep says which BMC and why, within its deadline, then
//!   re-activates; a wrong password is named as such;
//! * end to end: the real `yunjian-agent` binary, a temperature pushed over its upper critical
//!   threshold, a real aggregator raising the hardware alarm on `/api/alarms`, host reports
//!   going on while the BMC is dead.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use yunjian_agent::ipmi::session::{Credentials, Target};
use yunjian_agent::ipmi::{Sweep, Sweeper};
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator_core::identity::Role;
use yunjian_protocol::hardware::{BmcState, SensorReading, SensorStatus};
use yunjian_tests::ipmi_sim::IpmiSim;
use yunjian_tests::{eventually, free_port, get_json, http_get, require_tool, seed_users};

fn lan(sim: &IpmiSim, password: &str) -> Target {
    Target::Lan {
        address: sim.address(),
        credentials: Credentials::new("admin", password.as_bytes()),
    }
}

fn sweeper(sim: &IpmiSim, state: Option<&Path>) -> Sweeper {
    Sweeper::new(lan(sim, "secret"), Duration::from_millis(500), state)
}

fn ok(sweep: &Sweep) -> &[SensorReading] {
    assert!(
        matches!(sweep.report.bmc, BmcState::Ok(_)),
        "{:?}",
        sweep.report.bmc
    );
    &sweep.report.sensors
}

fn sensor<'a>(sensors: &'a [SensorReading], name: &str) -> &'a SensorReading {
    sensors
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no sensor {name:?} in {sensors:#?}"))
}

/// `ipmitool sdr elist` status column → ours.
fn ipmitool_status(text: &str) -> SensorStatus {
    match text {
        "ok" => SensorStatus::Ok,
        "lnc" | "unc" => SensorStatus::NonCritical,
        "lcr" | "ucr" => SensorStatus::Critical,
        "lnr" | "unr" => SensorStatus::NonRecoverable,
        "ns" => SensorStatus::NotAvailable,
        other => panic!("unknown ipmitool status {other:?}"),
    }
}

/// Power-supply state names as ipmitool prints them (sensor type 0x08), by offset.
const PSU_STATES: [&str; 7] = [
    "Presence detected",
    "Failure detected",
    "Predictive failure",
    "Power Supply AC lost",
    "AC lost or out-of-range",
    "AC out-of-range, but present",
    "Config Error",
];

/// ipmitool prints at most 2 decimals: compare within its rounding.
fn close(ours: i64, theirs: f64) -> bool {
    let theirs = (theirs * 1000.0).round() as i64;
    (ours - theirs).abs() <= 5 + theirs.abs() / 1000
}

fn compare_with_ipmitool(sim: &IpmiSim, sensors: &[SensorReading]) {
    let elist = sim.ipmitool_ok(&["sdr", "elist"]);
    let mut seen = 0;
    for line in elist.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cols.len(), 5, "{line}");
        let ours = sensor(sensors, cols[0]);
        seen += 1;
        assert_eq!(
            format!("{:02x}h", ours.number),
            cols[1],
            "{}: number",
            cols[0]
        );
        if ours.unit.is_empty() {
            // discrete: ipmitool lists the asserted states by name
            assert_eq!(ours.sensor_type, 0x08, "only the PSU is discrete here");
            let theirs: u16 = cols[4]
                .split(", ")
                .map(|name| {
                    let offset = PSU_STATES
                        .iter()
                        .position(|s| *s == name)
                        .unwrap_or_else(|| panic!("state {name:?}"));
                    1u16 << offset
                })
                .sum();
            assert_eq!(ours.states, theirs, "{}: states {line}", cols[0]);
            continue;
        }
        let (number, unit) = cols[4].split_once(' ').expect("value and unit");
        let theirs: f64 = number.parse().expect("a number");
        let value = ours
            .value
            .unwrap_or_else(|| panic!("{}: no value", cols[0]));
        assert!(close(value, theirs), "{}: {value} vs {line}", cols[0]);
        assert_eq!(ours.unit, unit, "{}: unit", cols[0]);
        assert_eq!(ours.status, ipmitool_status(cols[2]), "{}: {line}", cols[0]);
    }
    assert_eq!(seen, sensors.len(), "ipmitool lists every sensor we report");

    // thresholds: `ipmitool sensor` columns lnr lcr lnc unc ucr unr
    let table = sim.ipmitool_ok(&["sensor"]);
    for line in table.lines().filter(|l| !l.contains("discrete")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 10 {
            continue;
        }
        let t = sensor(sensors, cols[0]).thresholds;
        let ours = [
            t.lower_non_recoverable,
            t.lower_critical,
            t.lower_non_critical,
            t.upper_non_critical,
            t.upper_critical,
            t.upper_non_recoverable,
        ];
        for (i, theirs) in cols[4..10].iter().enumerate() {
            match (ours[i], *theirs) {
                (None, "na") => {}
                (Some(v), text) if text != "na" => {
                    assert!(close(v, text.parse().unwrap()), "{line}: {ours:?}")
                }
                other => panic!("{}: threshold {i}: {other:?} in {line}", cols[0]),
            }
        }
    }
}

/// Sessions open on the BMC, ipmitool's own included.
fn active_sessions(sim: &IpmiSim) -> u32 {
    let text = sim.ipmitool_ok(&["session", "info", "active"]);
    let line = text.lines().find(|l| l.starts_with("active sessions"));
    let n = line.and_then(|l| l.split(':').nth(1)).map(str::trim);
    n.and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"))
}

#[test]
fn every_sensor_equals_what_ipmitool_prints() {
    let Some(sim) = IpmiSim::start() else { return };
    if require_tool(&["ipmitool"], "ipmitool").is_none() {
        return;
    }
    let mut s = sweeper(&sim, None);
    // the emulation's initial state: all in range
    let first = s.sweep();
    let sensors = ok(&first);
    assert_eq!(sensors.len(), 5, "{sensors:#?}");
    assert_eq!(sensor(sensors, "CPU Temp").value, Some(45_000));
    compare_with_ipmitool(&sim, sensors);
    assert_eq!(
        first.report.chassis.map(|c| c.power_on),
        Some(true),
        "chassisctl.sh says on"
    );

    // over and under thresholds, a fractional voltage, a failed PSU
    sim.console(&[
        "sensor_set_value 0x20 0 1 0x5b 1",
        "sensor_set_value 0x20 0 2 0x0c 1",
        "sensor_set_value 0x20 0 3 0xcb 1",
        "sensor_set_value 0x20 0 4 0xe2 1",
        "sensor_set_bit 0x20 0 5 1 1 1",
    ]);
    let second = s.sweep();
    let sensors = ok(&second);
    let cpu = sensor(sensors, "CPU Temp");
    assert_eq!(
        (cpu.value, cpu.status),
        (Some(91_000), SensorStatus::Critical)
    );
    assert_eq!(cpu.thresholds.upper_critical, Some(90_000));
    assert_eq!(
        sensor(sensors, "FAN1").status,
        SensorStatus::NonCritical,
        "600 RPM under 1000"
    );
    assert_eq!(sensor(sensors, "12V").value, Some(12_180));
    assert_eq!(sensor(sensors, "PSU1 Power").status, SensorStatus::Critical);
    compare_with_ipmitool(&sim, sensors);
    assert_eq!(
        s.sdr_reads(),
        1,
        "the SDR repository is cached between sweeps"
    );
    assert_eq!(s.activations(), 1, "one long-lived session");

    // the session is closed, not left to the BMC's idle timeout
    assert_eq!(active_sessions(&sim), 2, "ours and ipmitool's own");
    s.close();
    assert_eq!(active_sessions(&sim), 1, "ours is closed");
}

#[test]
fn psu_failure_and_sel_entries_are_reported_once_across_restarts() {
    let Some(sim) = IpmiSim::start() else { return };
    let state = tempfile::tempdir().unwrap();
    let commit = |s: &mut Sweeper, sweep: &Sweep| {
        if let Some(c) = sweep.cursor {
            s.commit(c);
        }
    };
    let mut a = sweeper(&sim, Some(state.path()));
    let first = a.sweep();
    let psu = sensor(ok(&first), "PSU1 Status").clone();
    assert_eq!((psu.states, psu.status), (0b01, SensorStatus::Ok));
    // ipmi_sim logs the presence assertion at start
    assert!(
        first
            .report
            .sel
            .iter()
            .any(|e| e.sensor.as_deref() == Some("PSU1 Status") && e.offset == 0),
        "{:#?}",
        first.report.sel
    );
    commit(&mut a, &first);
    assert!(a.sweep().report.sel.is_empty(), "nothing new, nothing sent");

    sim.console(&["sensor_set_bit 0x20 0 5 1 1 1"]);
    let failed = a.sweep();
    let psu = sensor(ok(&failed), "PSU1 Status").clone();
    assert_eq!((psu.states, psu.status), (0b11, SensorStatus::Critical));
    assert_eq!(failed.report.sel.len(), 1, "{:#?}", failed.report.sel);
    let e = &failed.report.sel[0];
    assert_eq!(
        (
            e.sensor.as_deref(),
            e.sensor_type,
            e.event_type,
            e.offset,
            e.asserted
        ),
        (Some("PSU1 Status"), 0x08, 0x6f, 1, true)
    );
    assert_eq!(e.description, "Power Supply Failure detected");
    // a report that could not be queued (no commit) is sent again
    assert_eq!(a.sweep().report.sel, failed.report.sel);
    commit(&mut a, &failed);

    // an entry injected on the console: a deassertion of CPU Temp's upper critical
    sim.console(&["sel_add 0x20 0x02 0 0 0 0 0x20 0 0x04 0x01 0x01 0x81 0x59 0x50 0x5a"]);
    let injected = a.sweep();
    assert_eq!(injected.report.sel.len(), 1, "{:#?}", injected.report.sel);
    let e = &injected.report.sel[0];
    assert_eq!(
        (e.sensor.as_deref(), e.asserted, e.offset),
        (Some("CPU Temp"), false, 9)
    );
    commit(&mut a, &injected);
    drop(a);

    // the agent restarts: nothing is sent again, only what is new
    let mut b = sweeper(&sim, Some(state.path()));
    let after = b.sweep();
    assert!(after.report.sel.is_empty(), "{:#?}", after.report.sel);
    sim.console(&["sel_add 0x20 0x02 0 0 0 0 0x20 0 0x04 0x08 0x05 0x6f 0x02 0xff 0xff"]);
    let next = b.sweep();
    assert_eq!(next.report.sel.len(), 1, "{:#?}", next.report.sel);
    assert_eq!(
        (
            next.report.sel[0].offset,
            next.report.sel[0].sensor.as_deref()
        ),
        (2, Some("PSU1 Status"))
    );
}

#[test]
fn the_sel_clock_is_set_when_it_counts_from_bmc_start() {
    let Some(sim) = IpmiSim::start() else { return };
    // pre-init: "S+ 00:42:37" (since BMC start); set: "11/21/26 14:13:04 UTC"
    let year = |text: &str| -> Option<u32> {
        let date = text.split_whitespace().next()?;
        let y: u32 = date.rsplit('/').next()?.parse().ok()?;
        date.contains('/').then_some(2000 + y % 100)
    };
    let before = sim.ipmitool_ok(&["sel", "time", "get"]);
    assert!(
        before.starts_with("S+") && year(&before).is_none(),
        "ipmi_sim starts pre-init: {before}"
    );
    let mut off = sweeper(&sim, None);
    ok(&off.sweep());
    assert!(
        year(&sim.ipmitool_ok(&["sel", "time", "get"])).is_none(),
        "off by default"
    );
    let mut on = sweeper(&sim, None).with_sel_time_sync(true);
    ok(&on.sweep());
    let after = sim.ipmitool_ok(&["sel", "time", "get"]);
    assert!(year(&after).is_some_and(|y| y >= 2024), "{after}");
}

#[test]
fn a_dead_bmc_is_named_within_the_deadline_and_the_session_comes_back() {
    let Some(mut sim) = IpmiSim::start() else {
        return;
    };
    let mut s = sweeper(&sim, None);
    ok(&s.sweep());
    sim.kill();
    let start = Instant::now();
    let dead = s.sweep();
    let took = start.elapsed();
    let BmcState::Unreachable(cause) = &dead.report.bmc else {
        panic!("{:?}", dead.report.bmc)
    };
    assert!(cause.starts_with(&sim.address()), "{cause}");
    assert!(
        cause.contains("connection refused") || cause.contains("no answer within"),
        "{cause}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(dead.report.sensors.is_empty() && dead.report.chassis.is_none());
    // still dead: the RMCP ping gets no pong (or a refusal), no hang
    let again = s.sweep();
    assert!(matches!(again.report.bmc, BmcState::Unreachable(_)));

    sim.restart();
    let back = s.sweep();
    assert_eq!(ok(&back).len(), 5);
    assert!(s.activations() >= 2, "re-activated: {}", s.activations());

    // a BMC reset between two sweeps: the kept session is unknown to the new BMC; the same
    // sweep activates a new one instead of reporting the BMC unreachable
    let before = s.activations();
    sim.restart();
    let start = Instant::now();
    assert_eq!(ok(&s.sweep()).len(), 5);
    assert_eq!(s.activations(), before + 1);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // a wrong password: a clear error naming the BMC and the cause
    let mut wrong = Sweeper::new(lan(&sim, "wrong"), Duration::from_millis(500), None);
    let BmcState::Unreachable(cause) = wrong.sweep().report.bmc else {
        panic!("logged in with a wrong password")
    };
    assert_eq!(
        cause,
        format!("{}: authentication failed (wrong password?)", sim.address())
    );
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn open_alarm(http: std::net::SocketAddr, token: &str, subject: &str) -> Option<Value> {
    let alarms = get_json(http, token, "/api/alarms").await;
    alarms["open"]
        .as_array()?
        .iter()
        .find(|a| a["key"]["rule"] == "hardware" && a["key"]["subject"] == subject)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_raises_a_hardware_alarm_and_keeps_reporting_while_the_bmc_is_dead() {
    let Some(mut sim) = IpmiSim::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AggregatorConfig {
        data_dir: dir.path().join("agg"),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        policy_interval: Duration::from_millis(200),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // the operator on duty, and a unit's person (hosts are not theirs to see)
    let tokens = seed_users(
        &cfg,
        &[
            ("ops-zhang", Role::Ops, None),
            ("czj-li", Role::Unit, Some("财政局")),
        ],
    );
    let (ops, unit) = (tokens[0].as_str(), tokens[1].as_str());
    let agg = Aggregator::start(&cfg).await.unwrap();
    let http = agg.http_addr;
    let node = "rack1-h01";
    let key_file = dir.path().join("node.key");
    agg.master
        .node_key(node, yunjian_protocol::Role::Host)
        .write_file(&key_file)
        .unwrap();
    let credentials = sim.credentials_file("admin", "secret");
    let conf = dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "node_id = \"{node}\"\nrole = \"host\"\ninterval = \"500ms\"\nkey_file = {key:?}\n\
             rack = \"R1\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nbackoff_min_ms = 50\n\
             backoff_max_ms = 500\n[buffer]\ndir = {state:?}\n[antivirus]\nenabled = false\n\
             [ipmi]\ntransport = \"lan\"\naddress = \"{bmc}\"\ncredentials_file = {cred:?}\n\
             interval = \"1s\"\ntimeout = \"300ms\"\n",
            key = key_file.display().to_string(),
            port = cfg.broker.listen.port(),
            state = dir.path().join("state").display().to_string(),
            bmc = sim.address(),
            cred = credentials.display().to_string(),
        ),
    )
    .unwrap();
    let bin = tokio::task::spawn_blocking(|| yunjian_tests::agent_binary(&[]))
        .await
        .unwrap();
    let mut agent = Agent(
        Command::new(bin)
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the agent starts"),
    );
    let node_path = format!("/api/nodes/{node}");
    eventually("the first sweep", Duration::from_secs(20), || async {
        // unknown (404) until the agent's first message
        let (status, body) = http_get(http, ops, &node_path).await;
        let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        let sensors = v["state"]["hardware"]["sensors"].as_array().cloned();
        sensors.filter(|s| s.iter().any(|s| s["name"] == "CPU Temp"))
    })
    .await;

    // over the upper critical threshold (90): 0x5b = 91 degrees C
    sim.console(&["sensor_set_value 0x20 0 1 0x5b 1"]);
    let subject = format!("node:{node}/sensor:CPU Temp");
    let alarm = eventually("the hardware alarm", Duration::from_secs(20), || {
        open_alarm(http, ops, &subject)
    })
    .await;
    assert_eq!(
        alarm["level"].as_str().map(str::to_lowercase).as_deref(),
        Some("critical"),
        "{alarm}"
    );
    // a unit's person sees neither the host's hardware nor its (cloud-wide) alarm
    let (status, body) = http_get(http, unit, &format!("/api/servers/{node}/hardware")).await;
    assert_eq!(status, 403, "{body}");
    assert!(open_alarm(http, unit, &subject).await.is_none());

    // the BMC dies: host reports go on at their own pace
    sim.kill();
    let last_report = |v: &Value| v["state"]["last_report_ts_ms"].as_u64();
    let before = last_report(&get_json(http, ops, &node_path).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = get_json(http, ops, &node_path).await;
    let after = last_report(&v);
    assert!(
        after.is_some() && after > before,
        "host reports stalled: {before:?} -> {after:?}: {v}"
    );
    let bmc = |v: &Value| v["state"]["hardware"]["bmc"].clone();
    eventually(
        "the BMC reported unreachable",
        Duration::from_secs(20),
        || async {
            let b = bmc(&get_json(http, ops, &node_path).await);
            b["Unreachable"].as_str().map(|cause| {
                assert!(cause.starts_with(&sim.address()), "{cause}");
            })
        },
    )
    .await;
    sim.restart();
    eventually("the BMC back", Duration::from_secs(20), || async {
        bmc(&get_json(http, ops, &node_path).await)["Ok"]
            .as_str()
            .map(|_| ())
    })
    .await;

    // SIGTERM: the agent closes its BMC session on the way out (only ipmitool's own is left)
    let pid = agent.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stopped = Instant::now();
    while agent.0.try_wait().unwrap().is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "the agent did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(active_sessions(&sim), 1, "the agent's session is closed");
    agg.shutdown().await;
}
