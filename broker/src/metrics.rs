//! The broker's counters. Plain atomics, bumped with relaxed increments; the aggregator holds
//! them in its own metrics and renders them in `/metrics` as `yunjian_broker_*`.

use std::sync::atomic::AtomicU64;

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
}
