//! Publisher configuration (the `[mqtt]` and `[buffer]` sections of the agent config).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port.
    pub port: u16,
    /// MQTT keep-alive in seconds.
    pub keep_alive_s: u64,
    /// First reconnect delay in milliseconds; doubles on each failure (with jitter).
    pub backoff_min_ms: u64,
    /// Upper bound of the reconnect delay in milliseconds.
    pub backoff_max_ms: u64,
    /// MQTT over TLS: the CA certificate(s), PEM, that the broker's certificate must chain to,
    /// issued for `host`. Unset: plain MQTT.
    pub tls_ca: Option<PathBuf>,
    /// The name the broker's certificate must be issued for, when it is not `host` (e.g. the
    /// agent connects by address, the certificate names the host). Needs `tls_ca`.
    pub tls_server_name: Option<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            keep_alive_s: 30,
            backoff_min_ms: 500,
            backoff_max_ms: 60_000,
            tls_ca: None,
            tls_server_name: None,
        }
    }
}

/// The on-disk buffer of reports the broker has not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Directory for the buffer and the sequence counter. `None`: memory only (simulator).
    pub dir: Option<PathBuf>,
    /// Size cap in bytes; when reached, the oldest reports are dropped first and counted.
    pub max_bytes: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            dir: Some(PathBuf::from("/var/lib/yunjian-agent")),
            max_bytes: 16 * 1024 * 1024,
        }
    }
}
