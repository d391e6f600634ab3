//! yunjian-aggregator: embedded MQTT broker (or a client of an external one), ingest, fleet
//! state, storage and the web dashboard.
//!
//! Data flow: MQTT → [`ingest`] (decode, verify, de-duplicate) → [`fleet`] state → [`storage`];
//! [`web`] reads the fleet state and [`metrics`].

pub mod alarms;
pub mod antivirus;
pub mod app;
pub mod broker;
pub mod config;
pub mod external;
pub mod fleet;
pub mod hardware;
pub mod inbound;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod ratelimit;
pub mod reclaim;
pub mod register;
pub mod storage;
pub mod usage;
pub mod web;
