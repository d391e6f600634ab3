//! What a message source (the embedded broker, or the aggregator's client of an external
//! broker) hands to ingest.

use bytes::Bytes;
use std::time::Instant;
use tokio::sync::mpsc;

/// One received publish.
#[derive(Debug)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    /// When the aggregator read it off the network.
    pub received: Instant,
    /// Present for QoS 1 publishes: dropping it acknowledges the message to the sender.
    pub ack: Option<AckToken>,
}

/// Acknowledges one QoS 1 publish when dropped. Ingest keeps it until the message's effect is
/// durable in storage (or the message was rejected), so the sender resends anything the
/// aggregator did not finish with.
#[derive(Debug)]
pub struct AckToken(AckInner);

enum AckInner {
    /// The embedded broker's connection task writes the PUBACK.
    Broker {
        tx: mpsc::UnboundedSender<u16>,
        pkid: u16,
    },
    /// Another source's acknowledgement, e.g. a manual ack through an external broker's
    /// client. `None` once run.
    OnDrop(Option<Box<dyn FnOnce() + Send + Sync>>),
}

impl std::fmt::Debug for AckInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckInner::Broker { pkid, .. } => f.debug_struct("Broker").field("pkid", pkid).finish(),
            AckInner::OnDrop(_) => f.write_str("OnDrop"),
        }
    }
}

impl AckToken {
    pub(crate) fn broker(tx: mpsc::UnboundedSender<u16>, pkid: u16) -> Self {
        AckToken(AckInner::Broker { tx, pkid })
    }

    /// A token that acknowledges by running `ack` when dropped (a source other than the
    /// embedded broker, e.g. the client of an external broker).
    pub fn on_drop(ack: impl FnOnce() + Send + Sync + 'static) -> Self {
        AckToken(AckInner::OnDrop(Some(Box::new(ack))))
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        // If the connection is gone already, the sender resends on its next session.
        match &mut self.0 {
            AckInner::Broker { tx, pkid } => {
                let _ = tx.send(*pkid);
            }
            AckInner::OnDrop(ack) => {
                if let Some(ack) = ack.take() {
                    ack();
                }
            }
        }
    }
}
