//! The BMC over IPMI: every sensor in real units with its status against the BMC's own
//! thresholds, new System Event Log entries and the chassis state, sent as
//! [`Body::Hardware`] after every sweep (`[ipmi]` in the agent config; docs/HARDWARE.md).
//!
//! * [`session`]: one long-lived session (RMCP+ or `/dev/ipmi0`) through `ipmi-rs`,
//!   re-activated after a BMC reset or timeout, closed on shutdown, a deadline on every
//!   exchange.
//! * [`commands`]: the IPMI commands `ipmi-rs` lacks or gets wrong, as its `IpmiCommand`s.
//! * [`sdr`]: SDR records to sensors, raw readings to real units and statuses.
//! * [`sel`]: SEL entries, and the cursor that reports each entry once across restarts.
//!
//! The sweep is blocking I/O: it runs on a blocking thread under a deadline, on its own task,
//! so a dead or slow BMC never delays the host report. The SDR repository is cached and read
//! again (reserved, in chunks) when its record count or addition/erase timestamps change.

pub mod commands;
pub mod sdr;
pub mod sel;
pub mod session;

use crate::publish::Publisher;
use commands::{
    GetChassisStatus, GetSdrChunk, GetSdrRepositoryInfo, GetSelEntry, GetSelInfo, GetSelTime,
    GetSensorReading, GetSensorThresholds, RawThresholds, ReserveSdrRepository, SdrRepositoryStamp,
    SelInfo, SetSelTime, SetSessionPrivilege, CC_NOT_PRESENT, CC_RESERVATION_CANCELLED, SDR_CHUNK,
};
use sdr::SensorDef;
use sel::Cursor;
use serde::{Deserialize, Serialize};
use session::{Bmc, BmcError, Credentials, CredentialsError, Target};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use yunjian_protocol::hardware::{
    BmcState, HardwareReport, SelEntry, SensorReading, SensorStatus, Thresholds,
};
use yunjian_protocol::{Body, Role};

/// Most SEL entries sent in one report; older backlogs go out over the next sweeps.
pub const MAX_SEL_PER_SWEEP: usize = 64;
/// Most SDR records read (a guard against a repository whose "next" ids loop).
const MAX_SDR_RECORDS: usize = 4096;
/// The SEL cursor's file in the agent's state directory.
pub const SEL_CURSOR_FILE: &str = "ipmi-sel.cursor";
/// Before this, a SEL clock counts from BMC initialisation, not from 1970 (IPMI 2.0 37.1).
const SEL_TIME_PRE_INIT: u32 = 0x2000_0000;

/// `[ipmi]`: how the agent reads the BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpmiConfig {
    /// `"device"`: the Linux IPMI device (in-band), when it exists; `"lan"`: RMCP+ to
    /// `address` with the account in `credentials_file`; `"off"`.
    pub transport: Transport,
    /// The Linux IPMI device.
    pub device: PathBuf,
    /// The BMC for `transport = "lan"`: `"HOST"` or `"HOST:PORT"` (port 623 by default).
    pub address: String,
    /// `username = NAME` and `password = SECRET` lines, readable by root only (mode 0600).
    pub credentials_file: PathBuf,
    /// Time between two sweeps, e.g. `"60s"`.
    #[serde(with = "crate::config::duration_text")]
    pub interval: Duration,
    /// Deadline of each exchange with the BMC, e.g. `"1s"`.
    #[serde(with = "crate::config::duration_text")]
    pub timeout: Duration,
    /// Set the BMC's SEL clock to this host's time when it still counts from BMC start
    /// (needs an operator or administrator account).
    pub sync_sel_time: bool,
}

/// `[ipmi] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Off,
    Device,
    Lan,
}

impl Default for IpmiConfig {
    fn default() -> Self {
        IpmiConfig {
            transport: Transport::Device,
            device: PathBuf::from("/dev/ipmi0"),
            address: String::new(),
            credentials_file: PathBuf::from("/etc/yunjian/bmc.credentials"),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            sync_sel_time: false,
        }
    }
}

impl IpmiConfig {
    /// What serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if self.transport == Transport::Lan && self.address.trim().is_empty() {
            return Err("ipmi.transport = \"lan\" needs ipmi.address".into());
        }
        if self.interval < Duration::from_secs(1) {
            return Err("ipmi.interval must be at least 1s".into());
        }
        if self.timeout.is_zero() || self.timeout >= self.interval {
            return Err("ipmi.timeout must be above 0 and below ipmi.interval".into());
        }
        Ok(())
    }

    /// `address` with the default port when it has none (`[v6]` keeps its brackets).
    pub fn address_with_port(&self) -> String {
        let a = self.address.trim();
        let has_port = match a.rsplit_once(':') {
            Some((host, _)) if a.starts_with('[') => host.ends_with(']'),
            Some((host, _)) => !host.contains(':'),
            None => false,
        };
        if has_port {
            a.to_string()
        } else if a.contains(':') && !a.starts_with('[') {
            format!("[{a}]:623")
        } else {
            format!("{a}:623")
        }
    }

    /// The BMC to read, or `None` when there is none: transport off, a guest, or no device.
    /// Reads the credentials file for `lan` (the agent refuses to start when it is unusable).
    pub fn target(&self, role: Role) -> Result<Option<Target>, CredentialsError> {
        match self.transport {
            Transport::Off => Ok(None),
            Transport::Device if role == Role::Guest || !self.device.exists() => Ok(None),
            Transport::Device => Ok(Some(Target::Device(self.device.clone()))),
            Transport::Lan => Ok(Some(Target::Lan {
                address: self.address_with_port(),
                credentials: Credentials::read(&self.credentials_file)?,
            })),
        }
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The cached SDR repository.
#[derive(Debug, Clone)]
struct SdrCache {
    stamp: SdrRepositoryStamp,
    sensors: Vec<SensorDef>,
}

/// Sweeps one BMC: its session, the cached SDRs and the SEL position.
#[derive(Debug)]
pub struct Sweeper {
    bmc: Bmc,
    sync_sel_time: bool,
    sel_time_checked: bool,
    sdr: Option<SdrCache>,
    sdr_reads: u64,
    cursor_file: Option<PathBuf>,
    cursor: Option<Cursor>,
    /// The SEL info when the cursor's entry was the newest one: nothing new while it holds.
    sel_seen: Option<SelInfo>,
    /// `sel_seen` once the entries of the last sweep are committed.
    sel_pending: Option<SelInfo>,
}

/// One sweep's result: the report, and the SEL cursor to store once the report is queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub report: HardwareReport,
    pub cursor: Option<Cursor>,
}

impl Sweeper {
    /// `state_dir` holds the SEL cursor (`None`: kept in memory only).
    pub fn new(target: Target, timeout: Duration, state_dir: Option<&Path>) -> Self {
        let cursor_file = state_dir.map(|d| d.join(SEL_CURSOR_FILE));
        let cursor = cursor_file.as_deref().and_then(Cursor::load);
        Sweeper {
            bmc: Bmc::new(target, timeout),
            sync_sel_time: false,
            sel_time_checked: false,
            sdr: None,
            sdr_reads: 0,
            cursor_file,
            cursor,
            sel_seen: None,
            sel_pending: None,
        }
    }

    /// Set the SEL clock when it counts from BMC start (see [`IpmiConfig::sync_sel_time`]).
    pub fn with_sel_time_sync(mut self, on: bool) -> Self {
        self.sync_sel_time = on;
        self
    }

    /// Sessions activated so far.
    pub fn activations(&self) -> u64 {
        self.bmc.activations()
    }

    /// Times the SDR repository was read.
    pub fn sdr_reads(&self) -> u64 {
        self.sdr_reads
    }

    /// Read everything; a BMC that does not answer gives a report saying so, with the cause.
    pub fn sweep(&mut self) -> Sweep {
        // A session kept from the last sweep may be gone (BMC reset, idle timeout): one failure
        // on it gets one retry on a new session, within the same sweep.
        let reused = self.bmc.is_active();
        let result = match self.try_sweep() {
            Err(e @ BmcError::Link { .. }) if reused => {
                tracing::debug!("BMC session lost ({e}); activating a new one");
                self.try_sweep()
            }
            other => other,
        };
        match result {
            Ok(sweep) => sweep,
            Err(e) => {
                tracing::debug!("BMC sweep failed: {e}");
                Sweep {
                    report: HardwareReport {
                        bmc: BmcState::Unreachable(e.to_string()),
                        chassis: None,
                        sensors: Vec::new(),
                        sel: Vec::new(),
                    },
                    cursor: None,
                }
            }
        }
    }

    /// The SEL entries of a sweep were reported (queued): remember the last one, on disk too.
    pub fn commit(&mut self, cursor: Cursor) {
        self.cursor = Some(cursor);
        self.sel_seen = self.sel_pending.take();
        if let Some(path) = &self.cursor_file {
            if let Err(e) = cursor.store(path) {
                tracing::error!(path = %path.display(), "cannot store the SEL cursor: {e}");
            }
        }
    }

    /// Close the session.
    pub fn close(&mut self) {
        self.bmc.close();
    }

    fn try_sweep(&mut self) -> Result<Sweep, BmcError> {
        let stamp = self
            .bmc
            .call("Get SDR Repository Info", GetSdrRepositoryInfo)?;
        if self.sdr.as_ref().is_none_or(|c| c.stamp != stamp) {
            let sensors = self.read_sdrs()?;
            self.sdr_reads += 1;
            tracing::info!(
                bmc = %self.bmc.target().label(),
                sensors = sensors.len(),
                "SDR repository read"
            );
            self.sdr = Some(SdrCache { stamp, sensors });
        }
        let defs = self
            .sdr
            .as_ref()
            .map(|c| c.sensors.clone())
            .unwrap_or_default();
        let mut sensors = Vec::with_capacity(defs.len());
        for def in defs.iter().filter(|d| !d.event_only) {
            sensors.push(self.read_sensor(def)?);
        }
        let chassis = match self.bmc.call("Get Chassis Status", GetChassisStatus) {
            Ok(c) => Some(c),
            Err(e @ BmcError::Link { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!("{e}");
                None
            }
        };
        if self.sync_sel_time && !self.sel_time_checked {
            self.sync_sel_clock()?;
        }
        let sel = self.new_sel_entries(&defs)?;
        let cursor = sel.last().map(|e| Cursor {
            record_id: e.record_id,
            ts_s: e.ts_s,
        });
        Ok(Sweep {
            report: HardwareReport {
                bmc: BmcState::Ok(self.bmc.target().label()),
                chassis,
                sensors,
                sel,
            },
            cursor,
        })
    }

    /// The whole repository: reserve it, then read every record in chunks; a reservation
    /// cancelled half-way (the repository changed) starts over, up to three times.
    fn read_sdrs(&mut self) -> Result<Vec<SensorDef>, BmcError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.read_sdrs_once() {
                Err(e) if e.completion_code() == Some(CC_RESERVATION_CANCELLED) && attempt < 3 => {
                    tracing::debug!("SDR reservation cancelled; reading again");
                }
                other => return other,
            }
        }
    }

    fn read_sdrs_once(&mut self) -> Result<Vec<SensorDef>, BmcError> {
        let reservation = self
            .bmc
            .call("Reserve SDR Repository", ReserveSdrRepository)?;
        let mut defs = Vec::new();
        let mut record_id = 0u16;
        for _ in 0..MAX_SDR_RECORDS {
            if record_id == 0xFFFF {
                break;
            }
            let get = |offset: u8, length: u8| GetSdrChunk {
                reservation,
                record_id,
                offset,
                length,
            };
            let header = self.bmc.call("Get SDR", get(0, 5))?;
            if header.bytes.len() < 5 {
                return Err(BmcError::Reply {
                    bmc: self.bmc.target().bmc(),
                    command: "Get SDR",
                    cause: format!(
                        "record {record_id:#06x}: header of {} bytes",
                        header.bytes.len()
                    ),
                });
            }
            let total = 5 + usize::from(header.bytes[4]);
            let mut raw = header.bytes[..5].to_vec();
            while raw.len() < total {
                let want = (total - raw.len()).min(usize::from(SDR_CHUNK)) as u8;
                let chunk = self.bmc.call("Get SDR", get(raw.len() as u8, want))?;
                if chunk.bytes.is_empty() {
                    return Err(BmcError::Reply {
                        bmc: self.bmc.target().bmc(),
                        command: "Get SDR",
                        cause: format!("record {record_id:#06x}: empty chunk"),
                    });
                }
                raw.extend(chunk.bytes.iter().take(usize::from(want)));
            }
            match SensorDef::parse(&raw) {
                Ok(Some(def)) => defs.push(def),
                Ok(None) => {}
                Err(e) => tracing::warn!(bmc = %self.bmc.target().bmc(), "skipped: {e}"),
            }
            if header.next_id == record_id {
                break;
            }
            record_id = header.next_id;
        }
        Ok(defs)
    }

    fn read_sensor(&mut self, def: &SensorDef) -> Result<SensorReading, BmcError> {
        let mut out = SensorReading {
            name: def.name.clone(),
            number: def.number,
            sensor_type: def.sensor_type,
            value: None,
            unit: def.unit.clone(),
            status: SensorStatus::NotAvailable,
            thresholds: Thresholds::default(),
            states: 0,
        };
        let reading = GetSensorReading {
            owner: def.owner,
            lun: def.lun,
            number: def.number,
        };
        let reading = match self.bmc.call("Get Sensor Reading", reading) {
            Ok(r) => r,
            Err(e @ BmcError::Link { .. }) => return Err(e),
            // absent sensor, bridging refused...: this sensor is not available, the rest is
            Err(e) => {
                tracing::debug!(sensor = %def.name, "{e}");
                return Ok(out);
            }
        };
        if def.thresholds_readable && def.is_threshold() {
            let get = GetSensorThresholds {
                owner: def.owner,
                number: def.number,
            };
            match self.bmc.call("Get Sensor Thresholds", get) {
                Ok(raw) => out.thresholds = thresholds(def, &raw),
                Err(e @ BmcError::Link { .. }) => return Err(e),
                Err(e) => tracing::debug!(sensor = %def.name, "{e}"),
            }
        }
        if reading.available {
            if def.is_threshold() {
                out.value = def.to_milli(reading.raw);
                out.status = if out.value.is_some() {
                    def.status(reading.states & 0x3F)
                } else {
                    SensorStatus::NotAvailable
                };
            } else {
                out.value = def.to_milli(reading.raw);
                out.states = reading.states;
                out.status = def.status(reading.states);
            }
        }
        Ok(out)
    }

    fn sync_sel_clock(&mut self) -> Result<(), BmcError> {
        let bmc_time = self.bmc.call("Get SEL Time", GetSelTime)?;
        if bmc_time < SEL_TIME_PRE_INIT {
            let now = u32::try_from(now_s()).unwrap_or(u32::MAX);
            let set = self
                .bmc
                .call("Set Session Privilege Level", SetSessionPrivilege(3))
                .and_then(|_| self.bmc.call("Set SEL Time", SetSelTime(now)));
            match set {
                Ok(()) => tracing::info!(bmc = %self.bmc.target().bmc(), "SEL clock set"),
                Err(e @ BmcError::Link { .. }) => return Err(e),
                Err(e) => tracing::warn!("cannot set the SEL clock: {e}"),
            }
        }
        self.sel_time_checked = true;
        Ok(())
    }

    /// SEL entries after the cursor, oldest first, at most [`MAX_SEL_PER_SWEEP`].
    fn new_sel_entries(&mut self, defs: &[SensorDef]) -> Result<Vec<SelEntry>, BmcError> {
        let info = self.bmc.call("Get SEL Info", GetSelInfo)?;
        if info.entries == 0 || self.sel_seen == Some(info) {
            return Ok(Vec::new());
        }
        let name_of = |owner: u8, number: u8| {
            defs.iter()
                .find(|d| d.owner == owner && d.number == number)
                .map(|d| d.name.clone())
        };
        // Start after the cursor's entry when it is still there, else from the first entry.
        let mut record_id = 0u16;
        if let Some(c) = self.cursor {
            match self.bmc.call(
                "Get SEL Entry",
                GetSelEntry {
                    record_id: c.record_id,
                },
            ) {
                Ok(e) if sel::decode(&e.record, |_, _| None).ts_s == c.ts_s => {
                    record_id = e.next_id;
                }
                Ok(_) => {}
                Err(e) if e.completion_code() == Some(CC_NOT_PRESENT) => {}
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        let mut walked = 0;
        while record_id != 0xFFFF && out.len() < MAX_SEL_PER_SWEEP && walked < 0x10000 {
            walked += 1;
            let e = match self.bmc.call("Get SEL Entry", GetSelEntry { record_id }) {
                Ok(e) => e,
                // the SEL was emptied under us
                Err(e) if e.completion_code() == Some(CC_NOT_PRESENT) => break,
                Err(e) => return Err(e),
            };
            let entry = sel::decode(&e.record, name_of);
            if self.cursor.is_none_or(|c| c.is_before(&entry)) {
                out.push(entry);
            }
            if e.next_id == record_id {
                break;
            }
            record_id = e.next_id;
        }
        // Caught up: until the SEL changes, there is nothing to walk (once these entries are
        // committed: a report that could not be queued is walked again).
        let caught_up = (record_id == 0xFFFF).then_some(info);
        if out.is_empty() {
            self.sel_seen = caught_up;
        } else {
            self.sel_pending = caught_up;
        }
        Ok(out)
    }
}

fn thresholds(def: &SensorDef, raw: &RawThresholds) -> Thresholds {
    let conv = |v: Option<u8>| v.and_then(|r| def.to_milli(r));
    Thresholds {
        lower_non_recoverable: conv(raw.lnr),
        lower_critical: conv(raw.lc),
        lower_non_critical: conv(raw.lnc),
        upper_non_critical: conv(raw.unc),
        upper_critical: conv(raw.uc),
        upper_non_recoverable: conv(raw.unr),
    }
}

/// The running sweep task; [`IpmiTask::stop`] ends it and closes the BMC session.
#[derive(Debug)]
pub struct IpmiTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl IpmiTask {
    /// Let the sweep under way finish, close the session, and end the task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

/// Start sweeping `target` every `cfg.interval` (the first at once), publishing each
/// sweep as [`Body::Hardware`].
pub fn spawn(
    cfg: &IpmiConfig,
    target: Target,
    state_dir: Option<PathBuf>,
    publisher: Publisher,
) -> IpmiTask {
    let (stop, stopped) = oneshot::channel();
    let sweeper = Sweeper::new(target, cfg.timeout, state_dir.as_deref())
        .with_sel_time_sync(cfg.sync_sel_time);
    let task = run(sweeper, cfg.interval, publisher, stopped);
    let handle = tokio::spawn(tracing::Instrument::instrument(
        task,
        tracing::Span::current(),
    ));
    IpmiTask { stop, handle }
}

async fn run(
    sweeper: Sweeper,
    interval: Duration,
    publisher: Publisher,
    mut stopped: oneshot::Receiver<()>,
) {
    let label = sweeper.bmc.target().label();
    let mut idle = Some(sweeper);
    let mut running: Option<JoinHandle<(Sweeper, Sweep)>> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => break,
        }
        let mut task = match (running.take(), idle.take()) {
            (Some(task), _) => task,
            (None, Some(mut sweeper)) => tokio::task::spawn_blocking(move || {
                let sweep = sweeper.sweep();
                (sweeper, sweep)
            }),
            (None, None) => return,
        };
        // A sweep that overruns the interval is left to finish, never waited for.
        let (mut sweeper, sweep) = tokio::select! {
            done = tokio::time::timeout(interval, &mut task) => match done {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    tracing::error!(bmc = %label, "BMC sweep panicked: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(bmc = %label, "BMC sweep overran the interval; skipped");
                    running = Some(task);
                    continue;
                }
            },
            _ = &mut stopped => {
                running = Some(task);
                break;
            }
        };
        match &sweep.report.bmc {
            BmcState::Unreachable(cause) if last_error.as_ref() != Some(cause) => {
                tracing::warn!("BMC unreachable: {cause}");
                last_error = Some(cause.clone());
            }
            BmcState::Ok(_) if last_error.take().is_some() => {
                tracing::info!(bmc = %label, "BMC answers again");
            }
            _ => {}
        }
        match publisher.send(now_ms(), Body::Hardware(sweep.report)).await {
            Ok(seq) => {
                tracing::debug!(seq, "hardware report queued");
                if let Some(cursor) = sweep.cursor {
                    sweeper.commit(cursor);
                }
            }
            Err(e) => tracing::error!("cannot queue the hardware report: {e}"),
        }
        idle = Some(sweeper);
    }
    // Shutdown: wait for a sweep under way (bounded by the exchange deadlines), then close.
    let sweeper = match running {
        Some(task) => task.await.ok().map(|(s, _)| s),
        None => idle,
    };
    if let Some(mut sweeper) = sweeper {
        let _ = tokio::task::spawn_blocking(move || sweeper.close()).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let d = IpmiConfig::default();
        assert_eq!(d.transport, Transport::Device);
        assert!(d.validate().is_ok());
        let lan = IpmiConfig {
            transport: Transport::Lan,
            ..IpmiConfig::default()
        };
        assert!(lan.validate().unwrap_err().contains("needs ipmi.address"));
        let slow = IpmiConfig {
            timeout: Duration::from_secs(60),
            ..IpmiConfig::default()
        };
        assert!(slow.validate().unwrap_err().contains("ipmi.timeout"));
        let a = |address: &str| {
            IpmiConfig {
                address: address.into(),
                ..IpmiConfig::default()
            }
            .address_with_port()
        };
        assert_eq!(a("10.0.0.5"), "10.0.0.5:623");
        assert_eq!(a("10.0.0.5:1623"), "10.0.0.5:1623");
        assert_eq!(a("bmc.rack7"), "bmc.rack7:623");
        assert_eq!(a("[fd00::5]:700"), "[fd00::5]:700");
        assert_eq!(a("fd00::5"), "[fd00::5]:623");
        assert_eq!(a("[fd00::5]"), "[fd00::5]:623");
    }

    #[test]
    fn no_target_for_guests_absent_devices_or_off() {
        let dir = tempfile::tempdir().unwrap();
        let device = IpmiConfig {
            device: dir.path().join("ipmi0"),
            ..IpmiConfig::default()
        };
        assert_eq!(device.target(Role::Host).unwrap(), None, "no such device");
        std::fs::write(dir.path().join("ipmi0"), "").unwrap();
        assert_eq!(
            device.target(Role::Host).unwrap(),
            Some(Target::Device(dir.path().join("ipmi0")))
        );
        assert_eq!(device.target(Role::Guest).unwrap(), None);
        let off = IpmiConfig {
            transport: Transport::Off,
            ..device
        };
        assert_eq!(off.target(Role::Host).unwrap(), None);
        let lan = IpmiConfig {
            transport: Transport::Lan,
            address: "127.0.0.1".into(),
            credentials_file: dir.path().join("missing"),
            ..IpmiConfig::default()
        };
        let err = lan.target(Role::Host).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
