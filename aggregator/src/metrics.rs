//! The aggregator's own counters and the Prometheus text rendering of `/metrics`.
//!
//! Plain atomics: the ingest hot path only does relaxed increments.

use crate::fleet::{Fleet, Liveness};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use yunjian_broker::{BrokerMetrics, Refused};
use yunjian_protocol::FrameError;

/// Upper bounds (seconds) of the ingest-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe_ns(&self, ns: u64) {
        let secs = ns as f64 / 1e9;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.sum_ns.load(Relaxed) as f64 / 1e9
        );
    }
}

/// Why an authentic (correctly signed) frame was refused: its event time out of bounds
/// (ingest's check) or its place in the node's stream (the fleet's [`crate::fleet::Refusal`]).
pub const REFUSALS: [&str; 5] = [
    "time_ahead",
    "time_behind",
    "stale_status",
    "retired_epoch",
    "seq_jump",
];

/// Every counter of the aggregator.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages handed to ingest (any topic, any outcome).
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Rejected frames per [`FrameError::KINDS`] entry (same order).
    decode_errors: [AtomicU64; 8],
    /// Authentic frames refused per [`REFUSALS`] entry (same order).
    refused: [AtomicU64; REFUSALS.len()],
    /// Messages on topics that are not Yunjian node topics.
    pub bad_topic: AtomicU64,
    /// Verified messages that do not fit the role their node was enrolled with (a guest
    /// list from a VM, a Hello or Inventory declaring another role): refused.
    pub role_refused: AtomicU64,
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    /// Sequence numbers found missing when a later one arrived.
    pub gaps: AtomicU64,
    /// Missing sequence numbers that arrived late (out of order after a reconnect).
    pub late: AtomicU64,
    pub ingest_latency: Histogram,
    pub storage_batches: AtomicU64,
    pub storage_rows: AtomicU64,
    pub storage_errors: AtomicU64,
    /// The embedded broker's counters (it bumps them; `/metrics` shows them here).
    pub broker: Arc<BrokerMetrics>,
    /// Webhook notices delivered / given up after retries.
    pub notices_sent: AtomicU64,
    pub notices_failed: AtomicU64,
    /// What `/healthz` and `/readyz` check (see [`crate::health`]).
    pub health: crate::health::Health,
    /// HTTP connections open now (a gauge).
    pub http_connections: AtomicU64,
    /// HTTP connections closed at accept because `http.max_connections` were open.
    pub http_refused: AtomicU64,
    /// HTTP connections closed because a request's headers took longer than
    /// `http.header_timeout` (idle kept-alive connections included).
    pub http_header_timeouts: AtomicU64,
    /// Requests answered 408 after `http.request_timeout`.
    pub http_request_timeouts: AtomicU64,
    /// Failed `accept` calls on the web listener (out of file descriptors and the like).
    pub http_accept_errors: AtomicU64,
    /// Register imports refused for a file past the import's bounds (size, ZIP, sheet range,
    /// cells).
    pub imports_refused: AtomicU64,
}

impl Metrics {
    pub fn decode_error(&self, e: &FrameError) {
        self.decode_error_kind(e.kind());
    }

    pub fn decode_error_kind(&self, kind: &str) {
        if let Some(i) = FrameError::KINDS.iter().position(|k| *k == kind) {
            self.decode_errors[i].fetch_add(1, Relaxed);
        }
    }

    pub fn decode_errors(&self, kind: &str) -> u64 {
        FrameError::KINDS
            .iter()
            .position(|k| *k == kind)
            .map(|i| self.decode_errors[i].load(Relaxed))
            .unwrap_or(0)
    }

    /// Count a refused frame (`reason` one of [`REFUSALS`]).
    pub fn count_refusal(&self, reason: &str) {
        if let Some(i) = REFUSALS.iter().position(|k| *k == reason) {
            self.refused[i].fetch_add(1, Relaxed);
        }
    }

    pub fn refusals(&self, reason: &str) -> u64 {
        REFUSALS
            .iter()
            .position(|k| *k == reason)
            .map_or(0, |i| self.refused[i].load(Relaxed))
    }

    pub fn decode_errors_total(&self) -> u64 {
        self.decode_errors.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, fleet: &Fleet) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };

        let t = fleet.totals();
        let _ = writeln!(
            out,
            "# HELP yunjian_nodes Nodes known to the aggregator by role and liveness.\n# TYPE yunjian_nodes gauge"
        );
        let mut by = std::collections::BTreeMap::new();
        for st in fleet.nodes() {
            let role = st.role.map(|r| r.as_str()).unwrap_or("unknown");
            let live = match st.liveness {
                Liveness::Online => "online",
                Liveness::Silent => "silent",
                Liveness::Offline => "offline",
            };
            *by.entry((role, live)).or_insert(0u64) += 1;
        }
        for role in ["host", "guest", "unknown"] {
            for live in ["online", "silent", "offline"] {
                let v = by.get(&(role, live)).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "yunjian_nodes{{role=\"{role}\",liveness=\"{live}\"}} {v}"
                );
            }
        }
        gauge(
            &mut out,
            "yunjian_fleet_hosts",
            "Physical hosts known.",
            t.hosts as u64,
        );
        gauge(
            &mut out,
            "yunjian_fleet_guests",
            "VMs known.",
            t.guests as u64,
        );

        counter(
            &mut out,
            "yunjian_messages_in_total",
            "Messages received by ingest.",
            &self.messages_in,
        );
        counter(
            &mut out,
            "yunjian_bytes_in_total",
            "Payload bytes received by ingest.",
            &self.bytes_in,
        );
        let _ = writeln!(
            out,
            "# HELP yunjian_decode_errors_total Rejected messages by kind.\n# TYPE yunjian_decode_errors_total counter"
        );
        for (i, k) in FrameError::KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "yunjian_decode_errors_total{{kind=\"{k}\"}} {}",
                self.decode_errors[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP yunjian_frames_refused_total Authentic frames refused: event time out of bounds, a stale status, a retired epoch's hello, a sequence-number leap.\n# TYPE yunjian_frames_refused_total counter"
        );
        for (i, k) in REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "yunjian_frames_refused_total{{reason=\"{k}\"}} {}",
                self.refused[i].load(Relaxed)
            );
        }
        counter(
            &mut out,
            "yunjian_bad_topic_total",
            "Messages on topics outside the Yunjian scheme.",
            &self.bad_topic,
        );
        counter(
            &mut out,
            "yunjian_role_refused_total",
            "Verified messages refused because they do not fit the role the node was enrolled with.",
            &self.role_refused,
        );
        counter(
            &mut out,
            "yunjian_applied_total",
            "Messages applied to fleet state.",
            &self.applied,
        );
        counter(
            &mut out,
            "yunjian_duplicates_total",
            "Replayed messages ignored by sequence number.",
            &self.duplicates,
        );
        counter(
            &mut out,
            "yunjian_seq_gaps_total",
            "Sequence numbers found missing when a later one arrived.",
            &self.gaps,
        );
        counter(
            &mut out,
            "yunjian_seq_late_total",
            "Missing sequence numbers that arrived late and filled their gap.",
            &self.late,
        );
        gauge(
            &mut out,
            "yunjian_seq_missing",
            "Sequence numbers still missing, summed over nodes.",
            fleet
                .nodes()
                .fold(0u64, |sum, s| sum.saturating_add(s.missing)),
        );
        self.ingest_latency.render(
            &mut out,
            "yunjian_ingest_latency_seconds",
            "From receipt by the aggregator to applied to fleet state.",
        );
        counter(
            &mut out,
            "yunjian_storage_batches_total",
            "Storage transactions committed.",
            &self.storage_batches,
        );
        counter(
            &mut out,
            "yunjian_storage_rows_total",
            "Rows written to storage.",
            &self.storage_rows,
        );
        counter(
            &mut out,
            "yunjian_storage_errors_total",
            "Failed storage transactions.",
            &self.storage_errors,
        );
        gauge(
            &mut out,
            "yunjian_broker_connections",
            "MQTT connections open on the embedded broker.",
            self.broker.connections.load(Relaxed),
        );
        counter(
            &mut out,
            "yunjian_broker_connects_total",
            "MQTT connections accepted by the embedded broker.",
            &self.broker.connects_total,
        );
        counter(
            &mut out,
            "yunjian_broker_auth_failures_total",
            "MQTT logins refused.",
            &self.broker.auth_failures,
        );
        counter(
            &mut out,
            "yunjian_broker_acl_denied_total",
            "Publishes or subscriptions refused by the topic ACL.",
            &self.broker.acl_denied,
        );
        counter(
            &mut out,
            "yunjian_broker_protocol_errors_total",
            "Connections closed for MQTT protocol errors or oversized packets.",
            &self.broker.protocol_errors,
        );
        counter(
            &mut out,
            "yunjian_broker_dropped_total",
            "Messages dropped from a full subscriber queue.",
            &self.broker.dropped,
        );
        counter(
            &mut out,
            "yunjian_broker_publishes_in_total",
            "PUBLISH packets received by the embedded broker.",
            &self.broker.publishes_in,
        );
        counter(
            &mut out,
            "yunjian_broker_deliveries_out_total",
            "Messages delivered to MQTT subscribers.",
            &self.broker.deliveries_out,
        );
        counter(
            &mut out,
            "yunjian_notices_sent_total",
            "Webhook notices delivered.",
            &self.notices_sent,
        );
        counter(
            &mut out,
            "yunjian_notices_failed_total",
            "Webhook notices given up after retries.",
            &self.notices_failed,
        );
        let _ = writeln!(
            out,
            "# HELP yunjian_broker_connections_refused_total MQTT connections closed before login, by reason.\n\
             # TYPE yunjian_broker_connections_refused_total counter"
        );
        for why in Refused::ALL {
            let _ = writeln!(
                out,
                "yunjian_broker_connections_refused_total{{reason=\"{}\"}} {}",
                why.as_str(),
                self.broker.refused(why)
            );
        }
        counter(
            &mut out,
            "yunjian_broker_accept_errors_total",
            "Failed accepts on the MQTT listeners (out of file descriptors and the like).",
            &self.broker.accept_errors,
        );
        gauge(
            &mut out,
            "yunjian_http_connections",
            "HTTP connections open on the web server.",
            self.http_connections.load(Relaxed),
        );
        counter(
            &mut out,
            "yunjian_http_connections_refused_total",
            "HTTP connections closed at accept: http.max_connections were open.",
            &self.http_refused,
        );
        counter(
            &mut out,
            "yunjian_http_header_timeouts_total",
            "HTTP connections closed for headers not received within http.header_timeout.",
            &self.http_header_timeouts,
        );
        counter(
            &mut out,
            "yunjian_http_request_timeouts_total",
            "HTTP requests answered 408 after http.request_timeout.",
            &self.http_request_timeouts,
        );
        counter(
            &mut out,
            "yunjian_http_accept_errors_total",
            "Failed accepts on the web listener (out of file descriptors and the like).",
            &self.http_accept_errors,
        );
        counter(
            &mut out,
            "yunjian_register_imports_refused_total",
            "Register imports refused for a file past the import's bounds.",
            &self.imports_refused,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_kind() {
        let m = Metrics::default();
        m.decode_error(&FrameError::BadMac);
        m.decode_error_kind("truncated");
        m.decode_error_kind("truncated");
        m.ingest_latency.observe_ns(2_000_000);
        let text = m.render(&Fleet::new());
        assert!(text.contains("yunjian_decode_errors_total{kind=\"bad_mac\"} 1"));
        assert!(text.contains("yunjian_decode_errors_total{kind=\"truncated\"} 2"));
        assert!(text.contains("yunjian_ingest_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("yunjian_ingest_latency_seconds_bucket{le=\"0.001\"} 0"));
        assert_eq!(m.decode_errors_total(), 3);
    }
}
