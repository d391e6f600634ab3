//! # yunjian-protocol: the only definition of the Yunjian wire
//!
//! Agents, the simulator and the aggregator all speak through the types in this crate; nobody
//! re-declares a message.
//!
//! ## Frame layout
//!
//! ```text
//! +----------------------------- signed part ------------------------------+-----------+
//! | postcard(Envelope { version, node, seq, ts_ms, body })                   | MAC (16B) |
//! +--------------------------------------------------------------------------+-----------+
//! ```
//!
//! * `version` is the first field of [`Envelope`]; postcard encodes a `u8` as one byte, so the
//!   first byte of every frame is the protocol version and a receiver can reject an unknown
//!   version before decoding anything else. This build writes [`PROTOCOL_VERSION`] and reads
//!   every version from [`OLDEST_VERSION`] on (see [`legacy`]).
//! * The MAC is HMAC-SHA256 over the signed part with the sending node's enrolled key,
//!   truncated to [`MAC_LEN`] bytes (see [`auth`]).
//! * A frame is at most [`MAX_FRAME_LEN`] bytes.
//!
//! ## Evolution rules (postcard is not self-describing)
//!
//! postcard writes struct fields in declaration order and enum variants by their position. So:
//!
//! 1. Never reorder, remove or change the type of an existing field or variant.
//! 2. New message kinds are **appended** as new [`Body`] variants (or new [`command::Action`]
//!    variants); an old receiver then fails with a typed [`FrameError::Malformed`] instead of
//!    misreading bytes.
//! 3. A change to an existing struct needs a new protocol version: bump [`PROTOCOL_VERSION`],
//!    keep decoding the old version in the receiver, and add a golden-bytes test for the new one.
//! 4. Never use `#[serde(flatten)]`, `skip_serializing_if` or untagged enums on wire types.
//! 5. The golden-bytes tests in `tests/golden.rs` pin the exact layout; when one fails, you
//!    changed the wire. That is only acceptable together with rule 3.
//!
//! ## Topics
//!
//! See [`topics`]: one place for the whole scheme.

pub mod auth;
pub mod body;
pub mod command;
pub mod frame;
pub mod hardware;
pub mod legacy;
pub mod topics;

pub use auth::{KeyError, MasterKey, NodeKey, MAC_LEN};
pub use body::*;
pub use command::{
    Action, Command, CommandEvidence, CommandResult, DiskWipe, DiskWipeState, Evidence, VmLimits,
    VmRef, VmSize, VolumeInfo, WipeAlgorithm, WipeEvidence,
};
pub use frame::{decode, decode_unverified, encode, FrameError, MAX_FRAME_LEN};

use serde::{Deserialize, Serialize};

/// The protocol version this build writes.
///
/// History: 1 — the first wire; 2 — [`Hello::epoch`] (sequence numbers count within an
/// epoch).
pub const PROTOCOL_VERSION: u8 = 2;

/// The oldest version this build still reads (an older agent's frames are converted on
/// decode: see [`legacy`]).
pub const OLDEST_VERSION: u8 = 1;

/// Every message on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always [`PROTOCOL_VERSION`] when written by this build; the frame's own version when
    /// decoded. First byte of the frame.
    pub version: u8,
    /// The sending node's id (see [`topics::valid_node_id`]). Must equal the node in the topic.
    pub node: String,
    /// Per-node sequence number of reports, starting at 1 in each epoch ([`Hello::epoch`]),
    /// contiguous across restarts when the agent keeps its state directory. Status messages
    /// are outside the stream and carry their connection stamp here instead (see [`Status`]).
    pub seq: u64,
    /// Event time: when the sample was taken, milliseconds since the Unix epoch (UTC).
    /// Not the arrival time; the simulator's accelerated clock advances it faster than wall time.
    pub ts_ms: u64,
    pub body: Body,
}

impl Envelope {
    pub fn new(node: impl Into<String>, seq: u64, ts_ms: u64, body: Body) -> Self {
        Envelope {
            version: PROTOCOL_VERSION,
            node: node.into(),
            seq,
            ts_ms,
            body,
        }
    }
}
