//! yunjian-aggregator: the running aggregator around the domain of
//! `yunjian-aggregator-core`: the embedded MQTT broker (`yunjian-broker`) or a client of an
//! external one,
//! ingest, the storage thread, the reclaim service, notifications and the web dashboard.
//!
//! Data flow: MQTT → [`ingest`] (decode, verify, de-duplicate) → the core's fleet state →
//! storage (a backend crate behind the core's `store` ports); [`web`] reads the fleet state
//! and [`metrics`].

pub mod app;
pub mod config;
pub mod external;
pub mod files;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod offline;
pub mod reclaim;
pub mod service;
pub mod storage;
pub mod web;

// The core's modules under their own names, so paths read the same in this crate.
pub(crate) use yunjian_aggregator_core::{
    alarms, antivirus, fleet, hardware, identity, policy, register, store, time, usage,
};
// Rate-limited warnings and the wall clock, shared with the broker.
pub(crate) use yunjian_ratelimit as ratelimit;
