//! OpenIPMI's `ipmi_sim` as a real BMC for tests: LAN (RMCP+) on a free loopback UDP port,
//! its emulation console on a free loopback TCP port, a fresh state directory, the SDR
//! repository compiled from `tests/fixtures/ipmi/sensors.sdrs` with `sdrcomp -8`.
//!
//! Pitfalls handled here (see `shared/reference/ipmi-sim/NOTES.md`): every number in console
//! commands is hex; SIGPIPE is ignored (ipmi_sim dies when a console client hangs up while it
//! writes), readiness is an RMCP presence ping (never a probe of the console port); SDRs are
//! installed as `<state>/ipmi_sim/<name>/sdr.20.main` before the start; chassis power comes
//! from `chassisctl.sh` and a state file. The accounts are those of `lan.conf`: `admin` /
//! `secret` (administrator), `monitor` / `monitor1` (user).

use crate::require_tool;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The fixture directory: `lan.conf`, `testbmc.emu`, `sensors.sdrs`, `chassisctl.sh`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ipmi")
}

/// A running `ipmi_sim`, killed when dropped.
#[derive(Debug)]
pub struct IpmiSim {
    child: Option<Child>,
    /// RMCP (UDP) port on 127.0.0.1.
    pub port: u16,
    /// Emulation console (TCP) port on 127.0.0.1.
    pub console_port: u16,
    work: tempfile::TempDir,
}

/// A free loopback UDP port (bound then released).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback UDP port")
}

/// An RMCP/ASF presence ping; true when a pong comes back within `timeout`.
pub fn rmcp_ping(port: u16, timeout: Duration) -> bool {
    const PING: [u8; 12] = [
        0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00,
    ];
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    if s.send_to(&PING, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(s.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[8] == 0x40)
}

impl IpmiSim {
    /// Start on free ports; `None` when openipmi is missing outside CI.
    pub fn start() -> Option<Self> {
        require_tool(&["ipmi_sim"], "openipmi")?;
        require_tool(&["sdrcomp"], "openipmi")?;
        let work = tempfile::tempdir().expect("tempdir");
        let dir = work.path();
        let fx = fixtures();
        std::fs::copy(fx.join("chassisctl.sh"), dir.join("chassisctl.sh")).expect("copy");
        std::fs::set_permissions(
            dir.join("chassisctl.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod chassisctl.sh");
        std::fs::copy(fx.join("testbmc.emu"), dir.join("testbmc.emu")).expect("copy emu");
        std::fs::write(dir.join("power.state"), "1\n").expect("power.state");
        let sim = IpmiSim {
            child: None,
            port: free_udp_port(),
            console_port: crate::free_port(),
            work,
        };
        let conf = std::fs::read_to_string(fx.join("lan.conf"))
            .expect("lan.conf")
            .replace("@IPMI_PORT@", &sim.port.to_string())
            .replace("@CONSOLE_PORT@", &sim.console_port.to_string())
            .replace("@WORK@", &sim.dir().display().to_string());
        std::fs::write(sim.dir().join("lan.conf"), conf).expect("write lan.conf");
        // the SDR repository, compiled with 8-bit ASCII names
        let sdr_dir = sim.dir().join("state/ipmi_sim/testbmc");
        std::fs::create_dir_all(&sdr_dir).expect("state dir");
        let out = Command::new("sdrcomp")
            .arg("-8")
            .arg("-o")
            .arg(sdr_dir.join("sdr.20.main"))
            .arg(fx.join("sensors.sdrs"))
            .output()
            .expect("sdrcomp runs");
        assert!(
            out.status.success(),
            "sdrcomp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut sim = sim;
        sim.restart();
        Some(sim)
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start (again, keeping its state: SEL and users persist like a BMC's) and wait for the
    /// RMCP pong.
    pub fn restart(&mut self) {
        self.kill();
        let dir = self.dir().to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sim.log"))
            .expect("sim.log");
        // SIG_IGN survives exec; std::process::Command would reset SIGPIPE to default.
        let child = Command::new("sh")
            .arg("-c")
            .arg("trap '' PIPE; exec ipmi_sim \"$@\"")
            .arg("ipmi_sim")
            .arg("-n")
            .arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("testbmc.emu"))
            .arg("-s")
            .arg(dir.join("state"))
            .env("CHASSIS_STATE_FILE", dir.join("power.state"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("ipmi_sim starts");
        self.child = Some(child);
        let start = Instant::now();
        while !rmcp_ping(self.port, Duration::from_millis(200)) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("ipmi_sim exited ({status}): {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "ipmi_sim did not answer an RMCP ping on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("sim.log")).unwrap_or_default()
    }

    /// SIGKILL (a BMC that dies at once).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run emulation commands on the console (numbers in hex!); returns the console's text.
    /// Panics when ipmi_sim answers a command with an error (`**` lines).
    pub fn console(&self, commands: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.console_port)).expect("console");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut text = String::new();
        let read_prompt = |s: &mut TcpStream, text: &mut String| {
            let start = Instant::now();
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
                let clean: String = got
                    .iter()
                    .filter(|b| **b == b'\n' || (32..127).contains(*b))
                    .map(|b| char::from(*b))
                    .collect();
                if clean.ends_with("> ") || start.elapsed() > Duration::from_secs(3) {
                    text.push_str(&clean);
                    break;
                }
            }
        };
        read_prompt(&mut s, &mut text);
        for c in commands {
            s.write_all(format!("{c}\n").as_bytes())
                .expect("console write");
            read_prompt(&mut s, &mut text);
        }
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start_matches("> ").starts_with("**"))
            .collect();
        assert!(
            errors.is_empty(),
            "ipmi_sim refused {commands:?}: {errors:?}"
        );
        text
    }

    /// A credentials file (mode 0600) for the agent.
    pub fn credentials_file(&self, username: &str, password: &str) -> PathBuf {
        let path = self.dir().join(format!("{username}.credentials"));
        std::fs::write(
            &path,
            format!("username = {username}\npassword = {password}\n"),
        )
        .expect("credentials");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// `ipmitool -I lanplus -C 3` as admin against this BMC (the password is in a file, as
    /// ipmitool's `-f`).
    pub fn ipmitool(&self, args: &[&str]) -> Output {
        let pass = self.dir().join("ipmitool.pass");
        if !pass.exists() {
            std::fs::write(&pass, "secret\n").expect("ipmitool password file");
        }
        let port = self.port.to_string();
        Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", &port])
            .args(["-U", "admin", "-f"])
            .arg(&pass)
            .args(args)
            .output()
            .expect("ipmitool runs")
    }

    /// `ipmitool ... ARGS` standard output; panics when it fails.
    pub fn ipmitool_ok(&self, args: &[&str]) -> String {
        let out = self.ipmitool(args);
        assert!(
            out.status.success(),
            "ipmitool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        self.kill();
    }
}
