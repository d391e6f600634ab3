//! Aggregator configuration. Precedence: defaults < file (`--config`) < command line.
//! `yunjian-aggregator print-default-config` prints this file's defaults as TOML.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use yunjian_broker::BrokerConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// Directory for the master key (`master.key`) and the embedded SQLite database
    /// (`yunjian.db`, unless `storage` says otherwise).
    pub data_dir: PathBuf,
    /// Where the data is kept: `sqlite:PATH` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
    /// Unset: SQLite in `data_dir` (the embedded default).
    pub storage: Option<crate::storage::StorageUrl>,
    /// Address of the dashboard, JSON API and `/metrics`.
    pub http_listen: SocketAddr,
    /// The web server: `[http.tls]` serves HTTPS.
    pub http: HttpConfig,
    /// External broker (`mqtt://host:port`). Unset: run the embedded broker (`[broker]`).
    pub broker_url: Option<String>,
    /// Client id on the external broker; aggregators sharing the load need different ids.
    pub client_id: String,
    /// Messages waiting between the broker and ingest; beyond it publishers are slowed down.
    pub ingest_queue: usize,
    /// How far a frame's event time may be from the aggregator's clock.
    pub event_time: crate::ingest::EventTimeConfig,
    /// Policy profile: a built-in one (`000`…`004`, see `aggregator-core/profiles/`) or a path to a
    /// profile file. Default `003` (徽州区, the 70% capacity warning of 第十九条).
    pub policy_profile: String,
    /// How often every rule is evaluated.
    #[serde(with = "crate::time::duration")]
    pub policy_interval: std::time::Duration,
    /// Rules switched off by name (see `yunjian-aggregator rules`).
    pub disabled_rules: Vec<String>,
    /// Resource pools: a TOML file of `[[pool]]` tables (name, hosts by node id, `nic_mbps`
    /// per host, `reserved` and `overcommit` per resource), read at start; see
    /// `aggregator-core/src/register/pools.rs`. Unset: no pools.
    pub pools_file: Option<PathBuf>,
    /// The embedded broker.
    pub broker: BrokerConfig,
    /// Webhook notices of alarm changes.
    pub notify: crate::notify::NotifyConfig,
    /// Low-use reclaim cases: holiday calendars, command timing, the people who act (tokens).
    pub reclaim: crate::reclaim::ReclaimConfig,
    /// `/healthz`: when storage, the broker or ingest turn from degraded to failing.
    pub health: crate::health::HealthConfig,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            data_dir: PathBuf::from("yunjian-data"),
            storage: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http: HttpConfig::default(),
            broker_url: None,
            client_id: "yunjian-aggregator-1".into(),
            ingest_queue: 16 * 1024,
            event_time: crate::ingest::EventTimeConfig::default(),
            policy_profile: crate::policy::profile::DEFAULT.into(),
            policy_interval: std::time::Duration::from_secs(1),
            disabled_rules: Vec::new(),
            pools_file: None,
            broker: BrokerConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            reclaim: crate::reclaim::ReclaimConfig::default(),
            health: crate::health::HealthConfig::default(),
        }
    }
}

/// `[http]` section: how the dashboard, the JSON API and `/metrics` are served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Time a client has to send a request's headers, from the connection's start or from the
    /// end of the previous response; then the connection is closed. This also ends kept-alive
    /// connections that stay idle that long.
    #[serde(with = "crate::time::duration")]
    pub header_timeout: std::time::Duration,
    /// Time a request has, from its headers to the start of its response (reading the body
    /// included); then it is answered 408 and the connection closed. A response already
    /// streaming (the dashboard's event stream) is not cut.
    #[serde(with = "crate::time::duration")]
    pub request_timeout: std::time::Duration,
    /// Connections open at once (event streams included); a new connection beyond it is
    /// closed at once. Keep it below the open-file limit, which the aggregator raises
    /// to the hard limit at start, minus the broker's `max_connections`.
    pub max_connections: usize,
    /// HTTPS on `http_listen`: `cert` (PEM certificate chain, server certificate first) and
    /// `key` (PEM private key: PKCS#8, RSA or EC). The session cookie is then marked `Secure`.
    /// Unset: plain HTTP, for a loopback demo or behind a TLS-terminating proxy.
    pub tls: Option<yunjian_tls::TlsFiles>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(60),
            max_connections: 1024,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl AggregatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: AggregatorConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.broker_url {
            u.parse::<crate::external::BrokerUrl>()
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        self.notify
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.reclaim.validate().map_err(ConfigError::Invalid)?;
        if self.policy_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "policy_interval must be above 0".into(),
            ));
        }
        for r in &self.disabled_rules {
            if !crate::policy::rules::REGISTRY.iter().any(|x| x.name == r) {
                return Err(ConfigError::Invalid(format!(
                    "disabled_rules: unknown rule {r:?}; rules are {}",
                    crate::policy::rules::REGISTRY
                        .iter()
                        .map(|x| x.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if self.ingest_queue == 0 {
            return Err(ConfigError::Invalid(
                "ingest_queue must be at least 1".into(),
            ));
        }
        if !self.broker.plain && self.broker.tls.is_none() {
            return Err(ConfigError::Invalid(
                "broker.plain = false needs a [broker.tls] section (no listener otherwise)".into(),
            ));
        }
        if self.http.header_timeout.is_zero()
            || self.http.request_timeout.is_zero()
            || self.http.max_connections == 0
        {
            return Err(ConfigError::Invalid(
                "http.header_timeout, http.request_timeout and http.max_connections must be above 0"
                    .into(),
            ));
        }
        if self.broker.session_queue == 0 || self.broker.max_inflight == 0 {
            return Err(ConfigError::Invalid(
                "broker.session_queue and broker.max_inflight must be at least 1".into(),
            ));
        }
        let b = &self.broker;
        if b.connect_timeout.is_zero()
            || b.max_connections == 0
            || b.max_connections_per_address == 0
        {
            return Err(ConfigError::Invalid(
                "broker.connect_timeout, broker.max_connections and \
                 broker.max_connections_per_address must be above 0"
                    .into(),
            ));
        }
        if b.max_connect_bytes < 128 || b.max_connect_bytes > b.max_packet_bytes {
            return Err(ConfigError::Invalid(
                "broker.max_connect_bytes must be at least 128 (an agent's CONNECT is under 400) \
                 and at most broker.max_packet_bytes"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("yunjian.db")
    }

    /// The storage in use: `storage` if set, else SQLite at [`Self::database_path`].
    pub fn storage_url(&self) -> crate::storage::StorageUrl {
        self.storage
            .clone()
            .unwrap_or_else(|| crate::storage::StorageUrl::Sqlite(self.database_path()))
    }

    pub fn default_toml() -> String {
        toml::to_string_pretty(&AggregatorConfig::default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_roundtrips() {
        let text = AggregatorConfig::default_toml();
        assert_eq!(
            AggregatorConfig::parse(&text, "default").unwrap(),
            AggregatorConfig::default()
        );
    }

    /// `[event_time]`: the lag bound and a declared backfill as written in a config file; a
    /// bad duration names the key.
    #[test]
    fn event_time_bounds_read_from_the_file() {
        let cfg = AggregatorConfig::parse(
            "[event_time]\nmax_ahead = \"5m\"\nmax_behind = \"30d\"\nbackfill_from = \"2025-01-01\"\n",
            "a.toml",
        )
        .unwrap();
        let b = cfg.event_time.bounds();
        let now = 1_790_000_000_000; // 2026-09-21
        let day = 86_400_000;
        assert_eq!(b.check(now + 4 * 60_000, now), None);
        assert_eq!(b.check(now + 6 * 60_000, now), Some("time_ahead"));
        assert_eq!(b.check(now - 29 * day, now), None);
        // older than 30 days but after the declared backfill's start: accepted
        assert_eq!(b.check(now - 200 * day, now), None);
        // before it (2024): refused
        assert_eq!(b.check(now - 700 * day, now), Some("time_behind"));
        let e = AggregatorConfig::parse("[event_time]\nmax_behind = \"30 days\"", "a.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_behind"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = AggregatorConfig::parse("http_lisen = \"x\"", "a.toml").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("a.toml") && s.contains("http_lisen"), "{s}");
        let e = AggregatorConfig::parse("broker_url = \"tcp://x\"", "b.toml").unwrap_err();
        assert!(e.to_string().contains("mqtt://"), "{e}");
        let e = AggregatorConfig::parse("[broker]\nlisten = \"nope\"", "c.toml").unwrap_err();
        assert!(e.to_string().contains("c.toml"), "{e}");
        let e = AggregatorConfig::parse("storage = \"mysql://x\"", "d.toml").unwrap_err();
        assert!(
            e.to_string().contains("d.toml") && e.to_string().contains("sqlite:PATH"),
            "{e}"
        );
        let c = AggregatorConfig::parse("storage = \"postgres://yj:s3cret@db/yunjian\"", "e.toml")
            .unwrap();
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the password stays out of logs"
        );
    }

    #[test]
    fn tls_sections_parse_and_a_broker_without_listener_is_refused() {
        let c = AggregatorConfig::parse(
            "[http.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             [broker]\nplain = false\n\
             [broker.tls]\nlisten = \"0.0.0.0:8883\"\ncert = \"b.pem\"\nkey = \"b.key\"\n",
            "tls.toml",
        )
        .unwrap();
        assert_eq!(
            c.http.tls.map(|t| (t.cert, t.key)),
            Some((PathBuf::from("a.pem"), PathBuf::from("a.key")))
        );
        let tls = c.broker.tls.unwrap();
        assert_eq!(tls.listen.port(), 8883);
        assert!(!c.broker.plain);
        let e = AggregatorConfig::parse("[broker]\nplain = false\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("[broker.tls]"), "{e}");
        let e = AggregatorConfig::parse("[http.tls]\ncert = \"a.pem\"\n", "g.toml").unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
    }
}
