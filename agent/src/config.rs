//! The agent's configuration.
//!
//! # Precedence
//!
//! Every setting comes from the first of these that sets it, from strongest to weakest:
//!
//! 1. the command line: `--node-id`, `--role`, `--interval`, `--broker`, `--key-file`, `--rack`;
//! 2. the environment: `YUNJIAN_AGENT_NODE_ID`, `YUNJIAN_AGENT_ROLE`, `YUNJIAN_AGENT_INTERVAL`,
//!    `YUNJIAN_AGENT_BROKER` (`HOST:PORT`), `YUNJIAN_AGENT_KEY_FILE`, `YUNJIAN_AGENT_RACK`
//!    (empty values are ignored);
//! 3. the config file: `--config FILE` (or `YUNJIAN_AGENT_CONFIG`), which must exist, else
//!    [`DEFAULT_CONFIG_FILE`] when it exists;
//! 4. the defaults, written once in the `Default` impls (`yunjian-agent print-default-config`
//!    prints them).
//!
//! The merge is [`resolve`], a pure function of the file's text, an environment map and the
//! command-line values, so the order is tested without touching the process environment.

use crate::antivirus::AntivirusConfig;
use crate::collect::{Paths, Switches, MIN_SAMPLE_GAP, REGISTRY};
use crate::hypervisor::HypervisorConfig;
use crate::ipmi::IpmiConfig;
use crate::publish::config::{BufferConfig, MqttConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use yunjian_protocol::topics::valid_node_id;
use yunjian_protocol::Role;

/// Read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/yunjian/agent.toml";

/// The whole configuration file. Every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The node's id: 1–64 characters from `A-Z a-z 0-9 . _ -`. It names the node's MQTT
    /// topics and the key it was enrolled with. Default: the host name.
    pub node_id: Option<String>,
    /// `"host"` for a physical server, `"guest"` for a virtual machine.
    #[serde(with = "role_name")]
    pub role: Role,
    /// Time between two reports, written with a unit: `"10s"`, `"500ms"`, `"2m"`, `"1m30s"`.
    /// At least 250ms (CPU shares need two readings of `/proc/stat` 200 ms apart).
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// This node's key, as written by `yunjian-aggregator enroll NODE --out PATH`. The key
    /// itself is never logged or printed.
    pub key_file: PathBuf,
    /// Rack label for the rack view. Default: none.
    pub rack: Option<String>,
    /// Where the kernel's and the system's files are.
    pub paths: Paths,
    /// The MQTT broker.
    pub mqtt: MqttConfig,
    /// The on-disk buffer of reports not yet acknowledged by the broker.
    pub buffer: BufferConfig,
    /// Collectors to run, by name.
    pub collectors: Switches,
    /// The mandated-antivirus probe (slow: it runs on its own schedule).
    pub antivirus: AntivirusConfig,
    /// The BMC over IPMI (physical servers): sensors, SEL and chassis state.
    pub ipmi: IpmiConfig,
    /// The hypervisor (libvirt) whose VMs this host runs: guest reports and VM commands.
    pub hypervisor: HypervisorConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_id: None,
            role: Role::Host,
            interval: Duration::from_secs(10),
            key_file: PathBuf::from("/etc/yunjian/agent.key"),
            rack: None,
            paths: Paths::default(),
            mqtt: MqttConfig::default(),
            buffer: BufferConfig::default(),
            collectors: Switches::default(),
            antivirus: AntivirusConfig::default(),
            ipmi: IpmiConfig::default(),
            hypervisor: HypervisorConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Parse the text of a config file; errors name `path` and, for TOML errors, the line,
    /// column and key.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {source}")]
    Env {
        var: &'static str,
        source: ValueError,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A value written as text (command line, environment, file) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("invalid duration {0:?}: write a number and a unit (ms, s, m, h), like \"10s\" or \"1m30s\"")]
    Duration(String),
    #[error("invalid role {0:?}: expected \"host\" or \"guest\"")]
    Role(String),
    #[error("invalid broker address {0:?}: expected HOST:PORT, like \"mqtt.example:1883\" or \"[fd00::1]:1883\"")]
    Broker(String),
}

/// Parse a duration: one or more `<number><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let err = || ValueError::Duration(text.to_string());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let count: u32 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total = unit
            .checked_mul(count)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(err)?;
    }
    Ok(total)
}

/// Write a duration in the largest unit that is exact: `"2m"`, `"90s"`, `"500ms"`.
pub fn format_duration(d: Duration) -> String {
    const UNITS: [(u128, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1000, "s")];
    let ms = d.as_millis();
    match UNITS
        .iter()
        .find(|(unit, _)| ms > 0 && ms / unit * unit == ms)
    {
        Some((unit, suffix)) => format!("{}{suffix}", ms / unit),
        None => format!("{ms}ms"),
    }
}

/// `"host"` or `"guest"`.
pub fn parse_role(text: &str) -> Result<Role, ValueError> {
    match text {
        "host" => Ok(Role::Host),
        "guest" => Ok(Role::Guest),
        other => Err(ValueError::Role(other.to_string())),
    }
}

/// A broker address given as `HOST:PORT` (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

/// Parse `HOST:PORT`; an IPv6 address goes in brackets: `[fd00::1]:1883`.
pub fn parse_broker(text: &str) -> Result<Broker, ValueError> {
    let err = || ValueError::Broker(text.to_string());
    let (host, port) = text.rsplit_once(':').ok_or_else(err)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6,
        None if host.contains(':') => return Err(err()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| err())?;
    if host.is_empty() || port == 0 {
        return Err(err());
    }
    Ok(Broker {
        host: host.to_string(),
        port,
    })
}

/// `role = "host"` in TOML (the protocol's `Role` serializes by variant name).
mod role_name {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use yunjian_protocol::Role;

    pub fn serialize<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(role.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_role(&text).map_err(|_| de::Error::unknown_variant(&text, &["host", "guest"]))
    }
}

/// `interval = "10s"` in TOML.
pub(crate) mod duration_text {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(de::Error::custom)
    }
}

/// The environment variables the agent reads, strongest layer but the command line.
pub const ENV_NODE_ID: &str = "YUNJIAN_AGENT_NODE_ID";
pub const ENV_ROLE: &str = "YUNJIAN_AGENT_ROLE";
pub const ENV_INTERVAL: &str = "YUNJIAN_AGENT_INTERVAL";
pub const ENV_BROKER: &str = "YUNJIAN_AGENT_BROKER";
pub const ENV_KEY_FILE: &str = "YUNJIAN_AGENT_KEY_FILE";
pub const ENV_RACK: &str = "YUNJIAN_AGENT_RACK";

/// Settings given by the environment or the command line, over those of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub node_id: Option<String>,
    pub role: Option<Role>,
    pub interval: Option<Duration>,
    pub broker: Option<Broker>,
    pub key_file: Option<PathBuf>,
    pub rack: Option<String>,
}

impl Overrides {
    /// The `YUNJIAN_AGENT_*` variables of `env`; other variables and empty values are ignored.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str| env.get(var).filter(|v| !v.is_empty());
        fn parsed<T>(
            var: &'static str,
            value: Option<&String>,
            parse: fn(&str) -> Result<T, ValueError>,
        ) -> Result<Option<T>, ConfigError> {
            value
                .map(|v| parse(v).map_err(|source| ConfigError::Env { var, source }))
                .transpose()
        }
        Ok(Overrides {
            node_id: get(ENV_NODE_ID).cloned(),
            role: parsed(ENV_ROLE, get(ENV_ROLE), parse_role)?,
            interval: parsed(ENV_INTERVAL, get(ENV_INTERVAL), parse_duration)?,
            broker: parsed(ENV_BROKER, get(ENV_BROKER), parse_broker)?,
            key_file: get(ENV_KEY_FILE).map(PathBuf::from),
            rack: get(ENV_RACK).cloned(),
        })
    }

    fn apply(self, cfg: &mut AgentConfig) {
        if let Some(v) = self.node_id {
            cfg.node_id = Some(v);
        }
        if let Some(v) = self.role {
            cfg.role = v;
        }
        if let Some(v) = self.interval {
            cfg.interval = v;
        }
        if let Some(Broker { host, port }) = self.broker {
            cfg.mqtt.host = host;
            cfg.mqtt.port = port;
        }
        if let Some(v) = self.key_file {
            cfg.key_file = v;
        }
        if let Some(v) = self.rack {
            cfg.rack = Some(v);
        }
    }
}

/// A config file's path and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigText {
    pub path: PathBuf,
    pub text: String,
}

/// Read the config file: `explicit` must exist; without it, [`DEFAULT_CONFIG_FILE`] is read
/// if it exists.
pub fn read_config_file(explicit: Option<&Path>) -> Result<Option<ConfigText>, ConfigError> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_FILE));
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(ConfigText {
            path: path.to_path_buf(),
            text,
        })),
        Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// `config.node_id`, or the host name when it is not set.
    pub node_id: String,
    pub config: AgentConfig,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
}

/// Merge the layers (defaults < `file` < `env` < `cli`) and validate the result. `hostname` is
/// the default node id.
pub fn resolve(
    file: Option<&ConfigText>,
    env: &HashMap<String, String>,
    cli: Overrides,
    hostname: Option<&str>,
) -> Result<Loaded, ConfigError> {
    let mut config = match file {
        Some(f) => AgentConfig::from_toml(&f.text, &f.path)?,
        None => AgentConfig::default(),
    };
    Overrides::from_env(env)?.apply(&mut config);
    cli.apply(&mut config);

    let node_id = match (&config.node_id, hostname) {
        (Some(id), _) if valid_node_id(id) => id.clone(),
        (Some(id), _) => {
            return Err(ConfigError::Invalid(format!(
                "node_id {id:?} is not a valid node id (1-64 characters from A-Z a-z 0-9 . _ -)"
            )))
        }
        (None, Some(host)) if valid_node_id(host) => host.to_string(),
        (None, host) => {
            return Err(ConfigError::Invalid(format!(
                "node_id is not set and the host name {host:?} is not a valid node id \
                 (1-64 characters from A-Z a-z 0-9 . _ -): set node_id"
            )))
        }
    };
    if config.interval < MIN_SAMPLE_GAP {
        return Err(ConfigError::Invalid(format!(
            "interval {} is shorter than {} (CPU shares need two readings 200 ms apart)",
            format_duration(config.interval),
            format_duration(MIN_SAMPLE_GAP)
        )));
    }
    if u32::try_from(config.interval.as_millis()).is_err() {
        return Err(ConfigError::Invalid(format!(
            "interval {} is too long",
            format_duration(config.interval)
        )));
    }
    if config.mqtt.host.is_empty() || config.mqtt.port == 0 {
        return Err(ConfigError::Invalid(format!(
            "mqtt broker {:?}:{} needs a host and a non-zero port",
            config.mqtt.host, config.mqtt.port
        )));
    }
    if config.key_file.as_os_str().is_empty() {
        return Err(ConfigError::Invalid("key_file is empty".into()));
    }
    if config.rack.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(ConfigError::Invalid(
            "rack is empty: remove it or name the rack".into(),
        ));
    }
    config.antivirus.validate().map_err(ConfigError::Invalid)?;
    config.ipmi.validate().map_err(ConfigError::Invalid)?;
    config.hypervisor.validate().map_err(ConfigError::Invalid)?;
    Ok(Loaded {
        node_id,
        config,
        file: file.map(|f| f.path.clone()),
    })
}

/// One-line documentation of every key, as printed by [`default_toml`].
const KEY_DOCS: &[(&str, &str)] = &[
    (
        "node_id",
        "Node id: 1-64 characters from A-Z a-z 0-9 . _ -. Default: the host name.",
    ),
    (
        "role",
        "\"host\" for a physical server, \"guest\" for a virtual machine.",
    ),
    (
        "interval",
        "Time between reports: \"10s\", \"500ms\", \"2m\", \"1m30s\"; at least 250ms.",
    ),
    (
        "key_file",
        "This node's key, from `yunjian-aggregator enroll NODE --out PATH`.",
    ),
    ("rack", "Rack label for the rack view. Default: none."),
    (
        "paths",
        "Where the kernel's and the system's files are (e.g. /host/proc in a container).",
    ),
    (
        "paths.proc",
        "procfs: loadavg, uptime, meminfo, mounts, diskstats, net/dev.",
    ),
    (
        "paths.sys",
        "sysfs: class/dmi/id/product_uuid (a VM's SMBIOS UUID).",
    ),
    ("paths.etc", "os-release and machine-id."),
    ("mqtt", "The MQTT broker."),
    ("mqtt.host", "Broker host name or address."),
    ("mqtt.port", "Broker TCP port."),
    ("mqtt.keep_alive_s", "MQTT keep-alive in seconds."),
    (
        "mqtt.backoff_min_ms",
        "First reconnect delay (ms); doubles on each failure.",
    ),
    ("mqtt.backoff_max_ms", "Longest reconnect delay (ms)."),
    (
        "mqtt.tls_ca",
        "MQTT over TLS: CA certificate(s), PEM, the broker's certificate must chain to (for `host`).",
    ),
    (
        "mqtt.tls_server_name",
        "Name the broker's certificate must be issued for, if not `host`. Needs tls_ca.",
    ),
    (
        "buffer",
        "Reports the broker has not acknowledged yet, kept on disk.",
    ),
    (
        "buffer.dir",
        "Directory of the buffer and the sequence counter.",
    ),
    (
        "buffer.max_bytes",
        "Size cap; the oldest reports are dropped first.",
    ),
    ("collectors", "Collectors to run: true (on) or false (off)."),
    (
        "antivirus",
        "The mandated-antivirus probe (003 附件1 承诺书): installed, running, signatures current.",
    ),
    ("antivirus.enabled", "Run the probe and send its reports."),
    (
        "antivirus.interval",
        "Time between probes (the first at start); a slow probe, not run on every report.",
    ),
    (
        "antivirus.resend",
        "Send the report at least this often even when nothing changed.",
    ),
    (
        "antivirus.deadline",
        "A probe still running after this long is skipped; it never holds up the report.",
    ),
    (
        "antivirus.root",
        "Root for the dpkg database, unit files and the profiles' paths (processes: paths.proc).",
    ),
    (
        "antivirus.profile",
        "Extra detection profiles, each an [[antivirus.profile]] with name, packages, units, \
         processes, paths, signature_globs, version_file; one named like a built-in \
         (trend-ds-agent, clamav) replaces it.",
    ),
    (
        "ipmi",
        "The BMC over IPMI (physical servers): every sensor, new SEL entries, chassis power.",
    ),
    (
        "ipmi.transport",
        "\"device\" (in-band, when ipmi.device exists), \"lan\" (RMCP+ to ipmi.address) or \"off\".",
    ),
    ("ipmi.device", "The Linux IPMI device."),
    (
        "ipmi.address",
        "The BMC for transport \"lan\": \"HOST\" or \"HOST:PORT\" (port 623 by default).",
    ),
    (
        "ipmi.credentials_file",
        "For \"lan\": `username = NAME` and `password = SECRET` lines; mode 0600, owned by root.",
    ),
    ("ipmi.interval", "Time between two sensor sweeps."),
    (
        "ipmi.timeout",
        "Deadline of each exchange with the BMC; a dead BMC never delays the host report.",
    ),
    (
        "ipmi.sync_sel_time",
        "Set the BMC's SEL clock to this host's time while it counts from BMC start \
         (needs an operator account).",
    ),
    (
        "hypervisor",
        "The hypervisor of this host, through libvirt: guest lists and the aggregator's VM \
         commands (needs an agent built with the `libvirt` feature; see docs/EXECUTION.md).",
    ),
    (
        "hypervisor.enabled",
        "Connect to libvirt, report the guests and carry out VM commands.",
    ),
    (
        "hypervisor.uri",
        "libvirt connection URI: \"qemu:///system\", or \"test:///path/domains.xml\" for tests.",
    ),
    (
        "hypervisor.shutdown_timeout",
        "How long a VM gets to shut down cleanly before it is forced off.",
    ),
    (
        "hypervisor.guests_interval",
        "Time between two guest lists (one also follows every command).",
    ),
];

/// Keys without a default value, printed commented out with an example.
const EXAMPLES: &[(&str, &str)] = &[
    ("node_id", "\"rack1-host07\""),
    ("rack", "\"A-07\""),
    ("mqtt.tls_ca", "\"/etc/yunjian/ca.pem\""),
    ("mqtt.tls_server_name", "\"yunjian.zwy.example\""),
];

/// The default configuration as a commented TOML file (`print-default-config`).
pub fn default_toml() -> Result<String, toml::ser::Error> {
    let body = toml::to_string(&AgentConfig::default())?;
    let env = [
        ENV_NODE_ID,
        ENV_ROLE,
        ENV_INTERVAL,
        ENV_BROKER,
        ENV_KEY_FILE,
        ENV_RACK,
    ];
    let mut out = String::new();
    let _ = write!(
        out,
        "# yunjian-agent configuration: the defaults. Every key is optional.\n\
         # Precedence: defaults < this file < environment < command line.\n\
         # This file: --config FILE or YUNJIAN_AGENT_CONFIG, else {DEFAULT_CONFIG_FILE} if it exists.\n\
         # Environment ({ENV_BROKER} is HOST:PORT):\n#   {}\n\n",
        env.join("\n#   ")
    );
    let doc = |out: &mut String, key: &str| {
        let text = KEY_DOCS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, d)| *d)
            .or_else(|| {
                let name = key.strip_prefix("collectors.")?;
                REGISTRY.iter().find(|r| r.name == name).map(|r| r.help)
            });
        if let Some(text) = text {
            let _ = writeln!(out, "# {text}");
        }
    };
    for (key, example) in EXAMPLES.iter().filter(|(k, _)| !k.contains('.')) {
        doc(&mut out, key);
        let _ = writeln!(out, "# {key} = {example}");
    }
    let mut section = String::new();
    for line in body.lines() {
        let header = line.strip_prefix('[').and_then(|l| l.strip_suffix(']'));
        if let Some(name) = header {
            section = name.to_string();
            doc(&mut out, name);
        } else if let Some((key, _)) = line.split_once(" = ") {
            match section.as_str() {
                "" => doc(&mut out, key),
                s => doc(&mut out, &format!("{s}.{key}")),
            }
        }
        out.push_str(line);
        out.push('\n');
        // a section's examples go inside it (a dotted key before its table would redefine it)
        for (key, example) in EXAMPLES.iter().filter(|_| header.is_some()) {
            if let Some(name) = key.strip_prefix(&format!("{section}.")) {
                doc(&mut out, key);
                let _ = writeln!(out, "# {name} = {example}");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigText {
        ConfigText {
            path: PathBuf::from("/etc/yunjian/test.toml"),
            text: text.to_string(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn durations_take_units_and_print_back() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration(" 1m30s "), Ok(ms(90_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "s",
            "10 s",
            "1.5s",
            "-1s",
            "10sec",
            "5d",
            "99999999999s",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(ValueError::Duration(bad.into())),
                "{bad:?}"
            );
        }
        for text in ["500ms", "10s", "90s", "2m", "1h", "1500ms", "0ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn brokers_and_roles_parse() {
        let b = |host: &str, port| Broker {
            host: host.into(),
            port,
        };
        assert_eq!(
            parse_broker("mqtt.example:1883"),
            Ok(b("mqtt.example", 1883))
        );
        assert_eq!(parse_broker("10.0.0.5:8883"), Ok(b("10.0.0.5", 8883)));
        assert_eq!(parse_broker("[fd00::1]:1883"), Ok(b("fd00::1", 1883)));
        for bad in [
            "mqtt.example",
            "fd00::1:1883",
            ":1883",
            "h:0",
            "h:70000",
            "h:x",
        ] {
            assert_eq!(
                parse_broker(bad),
                Err(ValueError::Broker(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(parse_role("guest"), Ok(Role::Guest));
        assert_eq!(parse_role("Host"), Err(ValueError::Role("Host".into())));
    }

    #[test]
    fn file_then_env_then_cli() {
        let f = file(
            "node_id = \"from-file\"\nrole = \"guest\"\ninterval = \"30s\"\nrack = \"R1\"\n\
             [mqtt]\nhost = \"file-broker\"\nport = 1884\n",
        );
        let only_file = resolve(Some(&f), &env(&[]), Overrides::default(), Some("h")).unwrap();
        assert_eq!(only_file.node_id, "from-file");
        assert_eq!(only_file.config.role, Role::Guest);
        assert_eq!(only_file.config.interval, Duration::from_secs(30));
        assert_eq!(only_file.config.mqtt.host, "file-broker");
        assert_eq!(
            only_file.file.as_deref(),
            Some(Path::new("/etc/yunjian/test.toml"))
        );

        let e = env(&[
            (ENV_NODE_ID, "from-env"),
            (ENV_INTERVAL, "20s"),
            (ENV_BROKER, "env-broker:1885"),
            (ENV_RACK, ""),
            ("UNRELATED", "x"),
        ]);
        let with_env = resolve(Some(&f), &e, Overrides::default(), Some("h")).unwrap();
        assert_eq!(with_env.node_id, "from-env");
        assert_eq!(with_env.config.interval, Duration::from_secs(20));
        assert_eq!(
            (
                with_env.config.mqtt.host.as_str(),
                with_env.config.mqtt.port
            ),
            ("env-broker", 1885)
        );
        assert_eq!(with_env.config.role, Role::Guest, "not in env: file wins");
        assert_eq!(
            with_env.config.rack.as_deref(),
            Some("R1"),
            "empty env ignored"
        );

        let cli = Overrides {
            node_id: Some("from-cli".into()),
            interval: Some(Duration::from_secs(5)),
            ..Overrides::default()
        };
        let with_cli = resolve(Some(&f), &e, cli, Some("h")).unwrap();
        assert_eq!(with_cli.node_id, "from-cli");
        assert_eq!(with_cli.config.interval, Duration::from_secs(5));
        assert_eq!(
            with_cli.config.mqtt.host, "env-broker",
            "not on cli: env wins"
        );
    }

    #[test]
    fn node_id_defaults_to_a_valid_host_name() {
        let none = env(&[]);
        let loaded = resolve(None, &none, Overrides::default(), Some("db-01.dc1")).unwrap();
        assert_eq!(loaded.node_id, "db-01.dc1");
        assert_eq!(loaded.config, AgentConfig::default());
        assert_eq!(loaded.file, None);
        let err = resolve(None, &none, Overrides::default(), Some("bad/host")).unwrap_err();
        assert!(err.to_string().contains("set node_id"), "{err}");
        assert!(resolve(None, &none, Overrides::default(), None).is_err());
    }

    #[test]
    fn invalid_values_are_refused_with_the_reason() {
        let none = env(&[]);
        let check = |text: &str, expected: &str| {
            let err = resolve(Some(&file(text)), &none, Overrides::default(), Some("h"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        };
        check("interval = \"0s\"", "shorter than 250ms");
        check("interval = \"100ms\"", "shorter than 250ms");
        check("interval = \"1200h\"", "too long");
        check("interval = \"ten\"", "invalid duration \"ten\"");
        check("interval = 10", "invalid type");
        check("node_id = \"a/b\"", "\"a/b\" is not a valid node id");
        check(
            "role = \"vm\"",
            "unknown variant `vm`, expected `host` or `guest`",
        );
        check("rack = \" \"", "rack is empty");
        check("[mqtt]\nhost = \"\"", "needs a host");

        let bad_env = env(&[(ENV_ROLE, "hypervisor")]);
        let err = resolve(None, &bad_env, Overrides::default(), Some("h")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable YUNJIAN_AGENT_ROLE: invalid role \"hypervisor\": \
             expected \"host\" or \"guest\""
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_file_and_line() {
        let err = AgentConfig::from_toml(
            "role = \"host\"\ncolectors = 1\n",
            Path::new("/etc/yunjian/agent.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("config file /etc/yunjian/agent.toml: "),
            "{err}"
        );
        assert!(err.contains("unknown field `colectors`"), "{err}");
        assert!(err.contains("line 2"), "{err}");

        let nested = AgentConfig::from_toml("[mqtt]\nhots = \"x\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(nested.contains("unknown field `hots`"), "{nested}");

        let collector = AgentConfig::from_toml("[collectors]\ngpu = true\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(collector.contains("unknown field `gpu`"), "{collector}");
        assert!(
            collector.contains("`cpu`"),
            "lists the known collectors: {collector}"
        );
    }

    #[test]
    fn collectors_can_be_switched_off_by_name() {
        let cfg =
            AgentConfig::from_toml("[collectors]\nnetwork = false\n", Path::new("a.toml")).unwrap();
        assert!(!cfg.collectors.is_enabled("network"));
        assert!(
            cfg.collectors.is_enabled("cpu"),
            "unlisted keep their default"
        );
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("agent.toml");
        let err = read_config_file(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        std::fs::write(&missing, "rack = \"B\"\n").unwrap();
        let read = read_config_file(Some(&missing)).unwrap().unwrap();
        assert_eq!((read.path, read.text.as_str()), (missing, "rack = \"B\"\n"));
    }

    #[test]
    fn the_printed_default_config_documents_every_key_and_parses_back() {
        let text = default_toml().unwrap();
        assert_eq!(
            AgentConfig::from_toml(&text, Path::new("default.toml")).unwrap(),
            AgentConfig::default()
        );
        let uncommented: String = text
            .lines()
            .map(|l| {
                EXAMPLES
                    .iter()
                    .find(|(k, _)| l.starts_with(&format!("# {k} = ")))
                    .map_or(l, |_| &l[2..])
            })
            .collect::<Vec<_>>()
            .join("\n");
        let with_examples = AgentConfig::from_toml(&uncommented, Path::new("x")).unwrap();
        assert_eq!(with_examples.node_id.as_deref(), Some("rack1-host07"));
        assert_eq!(with_examples.rack.as_deref(), Some("A-07"));

        // Every key and section is printed under its comment, and every doc names a key.
        let lines: Vec<&str> = text.lines().collect();
        let mut printed: Vec<String> = EXAMPLES.iter().map(|(k, _)| k.to_string()).collect();
        let mut section = String::new();
        for (i, line) in lines.iter().enumerate() {
            let key = if let Some(name) = line.strip_prefix('[') {
                section = name.trim_end_matches(']').to_string();
                section.clone()
            } else if let (false, Some((key, _))) = (line.starts_with('#'), line.split_once(" = "))
            {
                match section.as_str() {
                    "" => key.to_string(),
                    s => format!("{s}.{key}"),
                }
            } else {
                continue;
            };
            assert!(lines[i - 1].starts_with("# "), "no comment above {line:?}");
            printed.push(key);
        }
        let mut documented: Vec<String> = KEY_DOCS.iter().map(|(k, _)| k.to_string()).collect();
        documented.extend(REGISTRY.iter().map(|r| format!("collectors.{}", r.name)));
        printed.sort();
        documented.sort();
        assert_eq!(printed, documented);
    }
}
