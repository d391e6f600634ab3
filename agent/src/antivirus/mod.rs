//! The mandated antivirus (003 附件1 承诺书: "未经允许绝不卸载已安装的趋势杀毒软件"; 001 第九条(四)):
//! is it installed, running and current?
//!
//! A slow probe apart from the periodic report: it reads the package database, unit files,
//! every process and signature directories, so it runs on its own task every
//! [`AntivirusConfig::interval`] (and at start), in a blocking thread, under
//! [`AntivirusConfig::deadline`]. A probe that overruns is skipped, never waited for: the host
//! report is never held up by it.
//!
//! Detection asks no service manager (these machines run none) and runs nothing: per
//! [`DetectionProfile`] it reads
//!
//! * the package in `{root}/var/lib/dpkg/status` ([`dpkg`]); products installed by rpm or a
//!   tarball are seen by their install `paths` instead;
//! * the unit file in `/etc/systemd/system`, `/lib/systemd/system`, `/usr/lib/systemd/system`
//!   and whether a `*.wants/` directory links it ([`files`]);
//! * running processes by name or executable path under `{proc}` ([`procs`]);
//! * the newest signature file's modification time, and a version file ([`files`]).
//!
//! Built-in profiles cover Trend Micro Deep Security Agent and ClamAV; `[[antivirus.profile]]`
//! sections of the agent config add others, or replace a built-in one of the same name.
//!
//! A report is sent when it differs from the last one sent, once more at the next probe (so the
//! aggregator can tell a removal, seen on two reports in a row, from an upgrade or a restart
//! caught half-way), and every [`AntivirusConfig::resend`] otherwise.

pub mod dpkg;
pub mod files;
pub mod procs;

use crate::publish::Publisher;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use yunjian_protocol::{AntivirusProduct, AntivirusReport, Body};

/// Most process names reported per product.
const MAX_PROCESSES: usize = 16;

/// `[antivirus]`: the antivirus probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntivirusConfig {
    /// Run the probe and send its reports.
    pub enabled: bool,
    /// Time between two probes, e.g. `"60s"`; the first runs at start.
    #[serde(with = "crate::config::duration_text")]
    pub interval: Duration,
    /// Send the report at least this often even when nothing changed, e.g. `"10m"`.
    #[serde(with = "crate::config::duration_text")]
    pub resend: Duration,
    /// A probe still running after this long is abandoned for this round, e.g. `"5s"`.
    #[serde(with = "crate::config::duration_text")]
    pub deadline: Duration,
    /// The filesystem root the profiles' paths, the dpkg database and unit files are read
    /// under (processes come from `paths.proc`).
    pub root: PathBuf,
    /// Extra detection profiles (`[[antivirus.profile]]`); one named like a built-in profile
    /// replaces it.
    #[serde(rename = "profile")]
    pub profiles: Vec<DetectionProfile>,
}

impl Default for AntivirusConfig {
    fn default() -> Self {
        AntivirusConfig {
            enabled: true,
            interval: Duration::from_secs(60),
            resend: Duration::from_secs(600),
            deadline: Duration::from_secs(5),
            root: PathBuf::from("/"),
            profiles: Vec::new(),
        }
    }
}

impl AntivirusConfig {
    /// The built-in profiles, with those of the config replacing or added to them.
    pub fn effective_profiles(&self) -> Vec<DetectionProfile> {
        let mut all = builtin_profiles();
        for p in &self.profiles {
            match all.iter_mut().find(|b| b.name == p.name) {
                Some(slot) => *slot = p.clone(),
                None => all.push(p.clone()),
            }
        }
        all
    }

    /// What serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_secs(1) {
            return Err("antivirus.interval must be at least 1s".into());
        }
        if self.deadline.is_zero() || self.deadline >= self.interval {
            return Err("antivirus.deadline must be above 0 and below antivirus.interval".into());
        }
        if self.resend < self.interval {
            return Err("antivirus.resend must be at least antivirus.interval".into());
        }
        for p in &self.profiles {
            if p.name.trim().is_empty() {
                return Err("an [[antivirus.profile]] needs a name".into());
            }
            if p.packages.is_empty() && p.paths.is_empty() {
                return Err(format!(
                    "antivirus profile {:?}: give packages or paths, or it can never be found installed",
                    p.name
                ));
            }
            let relative = p
                .paths
                .iter()
                .chain(&p.signature_globs)
                .chain(&p.version_file)
                .find(|f| !f.starts_with('/'));
            if let Some(f) = relative {
                return Err(format!(
                    "antivirus profile {:?}: {f:?} must be an absolute path",
                    p.name
                ));
            }
        }
        Ok(())
    }
}

/// How to recognise one antivirus product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionProfile {
    /// Name in the reports, e.g. `"trend-ds-agent"`.
    pub name: String,
    /// dpkg package names, most likely first; the first one present is reported.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Unit file names, e.g. `"ds_agent.service"`.
    #[serde(default)]
    pub units: Vec<String>,
    /// Processes: a bare name is compared with the process name and the executable's file
    /// name, `"/path/bin"` with the executable's path, `"/dir/"` with its beginning.
    #[serde(default)]
    pub processes: Vec<String>,
    /// Absolute install paths (files or directories): evidence for products installed
    /// without dpkg (rpm, tarball).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Signature files, wildcards (`*`, `?`) in the file name only, e.g.
    /// `"/var/lib/clamav/*.cvd"`: the newest one's modification time is the signature date.
    #[serde(default)]
    pub signature_globs: Vec<String>,
    /// A file whose first line is the product's version.
    #[serde(default)]
    pub version_file: Option<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The products known without configuration.
///
/// * `trend-ds-agent`: Trend Micro Deep Security Agent on Linux, the product the 承诺书
///   names. Package `ds-agent` (Debian) or `ds_agent` (rpm: seen by its files), unit
///   `ds_agent.service`, processes under `/opt/ds_agent/`. Its pattern files' location
///   differs between releases: give `signature_globs` in the config to have their date.
/// * `clamav`: package `clamav-daemon`, unit `clamav-daemon.service`, process `clamd`,
///   signatures in `/var/lib/clamav` (`*.cvd`, `*.cld`, `*.cud`, `*.hdb`).
pub fn builtin_profiles() -> Vec<DetectionProfile> {
    vec![
        DetectionProfile {
            name: "trend-ds-agent".into(),
            packages: strings(&["ds-agent", "ds_agent"]),
            units: strings(&["ds_agent.service"]),
            processes: strings(&["/opt/ds_agent/", "ds_agent", "ds_am"]),
            paths: strings(&["/opt/ds_agent/ds_agent"]),
            signature_globs: Vec::new(),
            version_file: None,
        },
        DetectionProfile {
            name: "clamav".into(),
            packages: strings(&["clamav-daemon"]),
            units: strings(&["clamav-daemon.service"]),
            processes: strings(&["clamd"]),
            paths: strings(&["/usr/sbin/clamd"]),
            signature_globs: strings(&[
                "/var/lib/clamav/*.cvd",
                "/var/lib/clamav/*.cld",
                "/var/lib/clamav/*.cud",
                "/var/lib/clamav/*.hdb",
            ]),
            version_file: None,
        },
    ]
}

/// Look for every profile under `root` and `proc`, giving up on the process scan once
/// `deadline` passes. Never fails: what could not be read is listed in `errors`.
pub fn probe(
    profiles: &[DetectionProfile],
    root: &Path,
    proc: &Path,
    deadline: Instant,
) -> AntivirusReport {
    let mut errors = Vec::new();
    let status_path = root.join(dpkg::STATUS);
    let status = match std::fs::read_to_string(&status_path) {
        Ok(text) => text,
        // no dpkg (an rpm system): products are seen by their files
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => {
            errors.push(format!("{}: {e}", status_path.display()));
            String::new()
        }
    };
    let (running, scan_error) = procs::scan(proc, deadline);
    errors.extend(scan_error);
    let products = profiles
        .iter()
        .map(|p| {
            let mut processes: Vec<String> = running
                .iter()
                .filter(|r| p.processes.iter().any(|m| procs::matches(m, r)))
                .map(|r| r.comm.clone())
                .collect();
            processes.sort_unstable();
            processes.dedup();
            processes.truncate(MAX_PROCESSES);
            let (signatures_s, sig_errors) = files::newest(root, &p.signature_globs);
            errors.extend(sig_errors);
            AntivirusProduct {
                profile: p.name.clone(),
                package: dpkg::find(&status, &p.packages),
                paths: files::existing(root, &p.paths),
                unit: files::unit(root, &p.units),
                processes,
                version: p
                    .version_file
                    .as_deref()
                    .and_then(|f| files::version(root, f)),
                signatures_s,
            }
        })
        .collect();
    AntivirusReport { products, errors }
}

/// When a probed report goes out: on a change, once more at the next probe to confirm the
/// change, and every `resend` otherwise.
#[derive(Debug, Clone)]
pub struct Schedule {
    resend: Duration,
    last: Option<(AntivirusReport, Instant)>,
    confirm: bool,
}

impl Schedule {
    pub fn new(resend: Duration) -> Self {
        Schedule {
            resend,
            last: None,
            confirm: false,
        }
    }

    /// Whether `report`, probed at `now`, is to be sent; if so it counts as sent. The first
    /// report counts as a change (the agent may have restarted after one).
    pub fn due(&mut self, report: &AntivirusReport, now: Instant) -> bool {
        let changed = self.last.as_ref().is_none_or(|(last, _)| last != report);
        let stale = self
            .last
            .as_ref()
            .is_some_and(|(_, at)| now.duration_since(*at) >= self.resend);
        let send = changed || self.confirm || stale;
        if send {
            self.confirm = changed;
            self.last = Some((report.clone(), now));
        }
        send
    }

    /// The last report could not be queued: send at the next probe, whatever it finds.
    pub fn forget(&mut self) {
        self.last = None;
        self.confirm = false;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Probe and send until the task is aborted. A probe that overruns its deadline (a hung
/// filesystem) is left to finish and skipped; no new one starts until it does.
pub async fn run(cfg: AntivirusConfig, proc: PathBuf, publisher: Publisher) {
    let profiles: Arc<[DetectionProfile]> = cfg.effective_profiles().into();
    let root: Arc<Path> = cfg.root.clone().into();
    let proc: Arc<Path> = proc.into();
    let mut schedule = Schedule::new(cfg.resend);
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut running: Option<JoinHandle<AntivirusReport>> = None;
    let mut overran = false;
    loop {
        tick.tick().await;
        let mut probe_task = running.take().unwrap_or_else(|| {
            let (profiles, root, proc) = (profiles.clone(), root.clone(), proc.clone());
            let deadline = Instant::now() + cfg.deadline;
            tokio::task::spawn_blocking(move || probe(&profiles, &root, &proc, deadline))
        });
        let started = Instant::now();
        let report = match tokio::time::timeout(cfg.deadline, &mut probe_task).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                tracing::error!("antivirus probe failed: {e}");
                continue;
            }
            Err(_) => {
                if !overran {
                    tracing::warn!(
                        deadline = ?cfg.deadline,
                        "antivirus probe overran its deadline; skipped until it finishes"
                    );
                }
                overran = true;
                running = Some(probe_task);
                continue;
            }
        };
        overran = false;
        tracing::debug!(
            duration_us = started.elapsed().as_micros() as u64,
            errors = report.errors.len(),
            "antivirus probed"
        );
        if !schedule.due(&report, Instant::now()) {
            continue;
        }
        match publisher.send(now_ms(), Body::Antivirus(report)).await {
            Ok(seq) => tracing::debug!(seq, "antivirus report queued"),
            Err(e) => {
                tracing::error!("cannot queue the antivirus report: {e}");
                schedule.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yunjian_protocol::{AntivirusPackage, PackageState};

    /// A fake machine with Trend Micro Deep Security Agent installed from its .deb and
    /// running.
    struct FakeTrend {
        dir: tempfile::TempDir,
    }

    const DS_AGENT: &str =
        "Package: ds-agent\nStatus: install ok installed\nVersion: 20.0.1-3180\n";

    impl FakeTrend {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let f = FakeTrend { dir };
            for d in [
                "root/var/lib/dpkg",
                "root/opt/ds_agent",
                "root/lib/systemd/system",
                "root/etc/systemd/system/multi-user.target.wants",
                "proc/1",
            ] {
                std::fs::create_dir_all(f.dir.path().join(d)).unwrap();
            }
            f.write_status(&format!(
                "Package: base\nStatus: install ok installed\nVersion: 1\n\n{DS_AGENT}"
            ));
            std::fs::write(f.root().join("opt/ds_agent/ds_agent"), "").unwrap();
            std::fs::write(f.root().join("lib/systemd/system/ds_agent.service"), "").unwrap();
            std::os::unix::fs::symlink(
                "/lib/systemd/system/ds_agent.service",
                f.root()
                    .join("etc/systemd/system/multi-user.target.wants/ds_agent.service"),
            )
            .unwrap();
            std::fs::write(f.proc().join("1/comm"), "init\n").unwrap();
            f.start("4242");
            f
        }
        fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }
        fn proc(&self) -> PathBuf {
            self.dir.path().join("proc")
        }
        fn write_status(&self, text: &str) {
            std::fs::write(self.root().join("var/lib/dpkg/status"), text).unwrap();
        }
        fn start(&self, pid: &str) {
            let d = self.proc().join(pid);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("comm"), "ds_agent\n").unwrap();
            std::os::unix::fs::symlink("/opt/ds_agent/ds_agent", d.join("exe")).unwrap();
        }
        fn stop(&self, pid: &str) {
            std::fs::remove_dir_all(self.proc().join(pid)).unwrap();
        }
        fn trend(&self) -> AntivirusProduct {
            let far = Instant::now() + Duration::from_secs(60);
            let mut r = probe(&builtin_profiles(), &self.root(), &self.proc(), far);
            assert_eq!(r.errors, Vec::<String>::new());
            assert_eq!(r.products[1].profile, "clamav");
            assert!(!r.products[1].installed(), "{:?}", r.products[1]);
            r.products.swap_remove(0)
        }
    }

    #[test]
    fn trend_micro_installed_running_stopped_and_removed() {
        let fake = FakeTrend::new();
        let t = fake.trend();
        assert_eq!(t.profile, "trend-ds-agent");
        assert_eq!(
            t.package,
            Some(AntivirusPackage {
                name: "ds-agent".into(),
                version: "20.0.1-3180".into(),
                state: PackageState::Installed,
            })
        );
        assert_eq!(t.paths, ["/opt/ds_agent/ds_agent"]);
        assert!(t.unit.as_ref().is_some_and(|u| u.enabled));
        assert_eq!(t.processes, ["ds_agent"]);
        assert!(t.installed() && t.running());

        fake.stop("4242");
        let stopped = fake.trend();
        assert!(stopped.installed() && !stopped.running());

        // dpkg --remove: the status entry goes to config-files, the binary stays behind
        fake.write_status(
            "Package: ds-agent\nStatus: deinstall ok config-files\nVersion: 20.0.1-3180\n",
        );
        let removed = fake.trend();
        assert_eq!(removed.package, None);
        assert_eq!(removed.paths, ["/opt/ds_agent/ds_agent"]);
    }

    #[test]
    fn config_profiles_add_and_replace() {
        let cfg: AntivirusConfig = toml::from_str(
            r#"
            [[profile]]
            name = "kav"
            packages = ["kesl"]
            processes = ["/opt/kaspersky/kesl/"]
            paths = ["/opt/kaspersky/kesl"]
            signature_globs = ["/var/opt/kaspersky/kesl/bases/*.kdc"]
            [[profile]]
            name = "clamav"
            packages = ["clamav-daemon"]
            processes = ["clamd"]
            signature_globs = ["/srv/clamdb/*.cvd"]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.validate(), Ok(()));
        let all = cfg.effective_profiles();
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["trend-ds-agent", "clamav", "kav"]);
        assert_eq!(all[1].signature_globs, ["/srv/clamdb/*.cvd"]);

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("opt/kaspersky/kesl")).unwrap();
        let r = probe(&all, root, &root.join("proc"), Instant::now());
        assert!(r.products[2].installed() && !r.products[2].running());
        assert_eq!(r.errors.len(), 1, "no proc dir: {:?}", r.errors);

        let bad: AntivirusConfig =
            toml::from_str("[[profile]]\nname = \"x\"\nprocesses = [\"x\"]\n").unwrap();
        assert!(bad.validate().unwrap_err().contains("packages or paths"));
        let relative: AntivirusConfig =
            toml::from_str("[[profile]]\nname = \"x\"\npaths = [\"opt/x\"]\n").unwrap();
        assert!(relative.validate().unwrap_err().contains("absolute"));
        let typo = toml::from_str::<AntivirusConfig>("[[profile]]\nname = \"x\"\npackage = []\n");
        assert!(typo.unwrap_err().to_string().contains("package"));
        let timing = AntivirusConfig {
            deadline: Duration::from_secs(60),
            ..AntivirusConfig::default()
        };
        assert!(timing.validate().unwrap_err().contains("deadline"));
        assert_eq!(AntivirusConfig::default().validate(), Ok(()));
    }

    fn report(version: &str) -> AntivirusReport {
        AntivirusReport {
            products: vec![AntivirusProduct {
                profile: "clamav".into(),
                package: Some(AntivirusPackage {
                    name: "clamav-daemon".into(),
                    version: version.into(),
                    state: PackageState::Installed,
                }),
                paths: vec![],
                unit: None,
                processes: vec!["clamd".into()],
                version: None,
                signatures_s: None,
            }],
            errors: vec![],
        }
    }

    #[test]
    fn sent_on_change_confirmed_once_and_resent_periodically() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut sched = Schedule::new(Duration::from_secs(600));
        let (a, b) = (report("1"), report("2"));
        assert!(sched.due(&a, s(0)), "first probe");
        assert!(sched.due(&a, s(60)), "the first report is confirmed too");
        assert!(!sched.due(&a, s(61)), "unchanged");
        assert!(sched.due(&b, s(120)), "changed");
        assert!(sched.due(&b, s(180)), "confirmed at the next probe");
        assert!(!sched.due(&b, s(240)));
        assert!(!sched.due(&b, s(779)));
        assert!(sched.due(&b, s(780)), "resend after 10 minutes");
        assert!(!sched.due(&b, s(840)));
        // a change that reverts at once is still sent both ways
        assert!(sched.due(&a, s(900)));
        assert!(sched.due(&b, s(960)));
        assert!(sched.due(&b, s(1020)));
        sched.forget();
        assert!(sched.due(&b, s(1021)), "after a failed send");
    }
}
