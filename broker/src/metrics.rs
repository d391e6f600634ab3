//! The broker's counters. Plain atomics, bumped with relaxed increments; the aggregator holds
//! them in its own metrics and renders them in `/metrics` as `yunjian_broker_*`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct BrokerMetrics {
    /// Client connections open now (a gauge).
    pub connections: AtomicU64,
    /// Connections accepted.
    pub connects_total: AtomicU64,
    /// Logins refused.
    pub auth_failures: AtomicU64,
    /// Publishes or subscriptions refused by the topic ACL.
    pub acl_denied: AtomicU64,
    /// Connections closed for MQTT protocol errors or oversized packets.
    pub protocol_errors: AtomicU64,
    /// Messages dropped from a subscriber's queue because it was full (never ingest's).
    pub dropped: AtomicU64,
    /// PUBLISH packets received.
    pub publishes_in: AtomicU64,
    /// Messages delivered to MQTT subscribers.
    pub deliveries_out: AtomicU64,
    /// Connections closed before login, per [`Refused::ALL`] entry (same order).
    refused: [AtomicU64; Refused::ALL.len()],
    /// Failed `accept` calls (out of file descriptors and the like).
    pub accept_errors: AtomicU64,
}

impl BrokerMetrics {
    pub fn refuse(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    pub fn refused(&self, why: Refused) -> u64 {
        self.refused[why as usize].load(Relaxed)
    }
}

/// Why a connection was closed before its client logged in: the `reason` label of
/// `yunjian_broker_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` were open already (closed at accept).
    MaxConnections,
    /// `max_connections_per_address` were open from its address already (closed at accept).
    PerAddress,
    /// Its CONNECT announced more than `max_connect_bytes`.
    ConnectTooLarge,
    /// No complete CONNECT within `connect_timeout`.
    ConnectTimeout,
}

impl Refused {
    pub const ALL: [Refused; 4] = [
        Refused::MaxConnections,
        Refused::PerAddress,
        Refused::ConnectTooLarge,
        Refused::ConnectTimeout,
    ];

    /// The stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::PerAddress => "per_address",
            Refused::ConnectTooLarge => "connect_too_large",
            Refused::ConnectTimeout => "connect_timeout",
        }
    }
}
