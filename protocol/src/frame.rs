//! Framing: postcard envelope + truncated HMAC, with typed errors for every way a frame can be
//! wrong.

use crate::auth::{NodeKey, MAC_LEN};
use crate::legacy::EnvelopeV1;
use crate::{Envelope, OLDEST_VERSION, PROTOCOL_VERSION};

/// Largest frame accepted or produced (bytes, MAC included). A host report is ~250 bytes; the
/// cap leaves room for large inventories and guest lists while bounding what a bad sender costs.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Why a frame was rejected. [`FrameError::kind`] gives the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty payload")]
    Empty,
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized { len: usize, max: usize },
    #[error("unknown protocol version {found} (this build reads {OLDEST_VERSION} to {PROTOCOL_VERSION})")]
    UnknownVersion { found: u8 },
    #[error("truncated frame: {0}")]
    Truncated(String),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("{0} unexpected bytes after the envelope")]
    TrailingBytes(usize),
    #[error("MAC check failed (wrong key, forged sender or tampered frame)")]
    BadMac,
    #[error("envelope node {envelope:?} does not match the topic's node {topic:?}")]
    NodeMismatch { envelope: String, topic: String },
    #[error("could not encode: {0}")]
    Encode(String),
}

impl FrameError {
    /// Stable label for counters (`decode_errors_total{kind=...}`).
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Empty => "empty",
            FrameError::Oversized { .. } => "oversized",
            FrameError::UnknownVersion { .. } => "unknown_version",
            FrameError::Truncated(_) => "truncated",
            FrameError::Malformed(_) => "malformed",
            FrameError::TrailingBytes(_) => "trailing_bytes",
            FrameError::BadMac => "bad_mac",
            FrameError::NodeMismatch { .. } => "node_mismatch",
            FrameError::Encode(_) => "encode",
        }
    }

    /// Every kind, for pre-registering counters at zero.
    pub const KINDS: &'static [&'static str] = &[
        "empty",
        "oversized",
        "unknown_version",
        "truncated",
        "malformed",
        "trailing_bytes",
        "bad_mac",
        "node_mismatch",
    ];
}

/// Encode and sign an envelope, always in this build's layout: the version byte written is
/// [`PROTOCOL_VERSION`] whatever `env.version` says (an envelope decoded from an older frame
/// is re-encoded in today's layout, never in a layout its version byte would misname).
pub fn encode(env: &Envelope, key: &NodeKey) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_stdvec(env).map_err(|e| FrameError::Encode(e.to_string()))?;
    // `version` is the first field, a u8: postcard writes it as the first byte
    out[0] = PROTOCOL_VERSION;
    let tag = key.mac(&out);
    out.extend_from_slice(&tag);
    if out.len() > MAX_FRAME_LEN {
        return Err(FrameError::Oversized {
            len: out.len(),
            max: MAX_FRAME_LEN,
        });
    }
    Ok(out)
}

fn split(frame: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    if frame.len() > MAX_FRAME_LEN {
        return Err(FrameError::Oversized {
            len: frame.len(),
            max: MAX_FRAME_LEN,
        });
    }
    if !(OLDEST_VERSION..=PROTOCOL_VERSION).contains(&frame[0]) {
        return Err(FrameError::UnknownVersion { found: frame[0] });
    }
    if frame.len() <= MAC_LEN {
        return Err(FrameError::Truncated(format!(
            "{} bytes, shorter than the {MAC_LEN}-byte MAC",
            frame.len()
        )));
    }
    Ok(frame.split_at(frame.len() - MAC_LEN))
}

fn parse(signed: &[u8]) -> Result<Envelope, FrameError> {
    // `split` admitted only known versions; the first byte picks the layout
    if signed.first() == Some(&1) {
        return finish(postcard::take_from_bytes::<EnvelopeV1>(signed)).map(Envelope::from);
    }
    finish(postcard::take_from_bytes::<Envelope>(signed))
}

fn finish<T>(decoded: postcard::Result<(T, &[u8])>) -> Result<T, FrameError> {
    match decoded {
        Ok((env, [])) => Ok(env),
        Ok((_, rest)) => Err(FrameError::TrailingBytes(rest.len())),
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            Err(FrameError::Truncated("envelope ends early".into()))
        }
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Decode a frame received on `topic_node`'s topic and verify it with that node's key.
///
/// Order of checks: size, version byte, envelope decode, MAC, node id against the topic. The
/// decode runs before the MAC so that garbage is reported as malformed rather than forged; it is
/// bounded by [`MAX_FRAME_LEN`] and never panics.
pub fn decode(frame: &[u8], topic_node: &str, key: &NodeKey) -> Result<Envelope, FrameError> {
    let (signed, tag) = split(frame)?;
    let env = parse(signed)?;
    if !key.verify(signed, tag) {
        return Err(FrameError::BadMac);
    }
    if env.node != topic_node {
        return Err(FrameError::NodeMismatch {
            envelope: env.node,
            topic: topic_node.to_string(),
        });
    }
    Ok(env)
}

/// Decode without checking the MAC: for diagnostics tools only, never for ingest.
pub fn decode_unverified(frame: &[u8]) -> Result<Envelope, FrameError> {
    let (signed, _) = split(frame)?;
    parse(signed)
}
