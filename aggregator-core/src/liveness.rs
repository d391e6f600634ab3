//! A node's connection state, as the fleet tracks it and the assessments read it.

use serde::Serialize;

/// Connection state of a node as the aggregator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Status online and messages arriving.
    Online,
    /// Status online but no message for too long.
    Silent,
    /// Offline status (clean shutdown or last will).
    Offline,
}
