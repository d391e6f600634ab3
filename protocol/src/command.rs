//! Commands from the aggregator to an agent and their results.
//!
//! A command travels inside an [`Envelope`](crate::Envelope) signed with the target node's key
//! (only the aggregator, which holds the master key, can produce it) on the node's command
//! topic. It has a unique id (so a replay is recognised and not executed twice) and an expiry
//! (so a command delayed past it is refused).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id (random), used for idempotence and to match the result.
    pub id: [u8; 16],
    /// Unix ms after which the agent must refuse the command.
    pub expires_ms: u64,
    pub action: Action,
}

/// What to do. Only append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Answer with a result at once (liveness of the command path).
    Ping,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: [u8; 16],
    pub ok: bool,
    /// Human-readable outcome or error.
    pub message: String,
}
