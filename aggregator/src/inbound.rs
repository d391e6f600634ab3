//! What a message source (the embedded broker or an external broker's client) hands to ingest.

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

#[derive(Debug)]
enum AckInner {
    /// The embedded broker's connection task writes the PUBACK.
    Broker {
        tx: mpsc::UnboundedSender<u16>,
        pkid: u16,
    },
    /// A manual ack through the external broker's client.
    External {
        client: rumqttc::v5::AsyncClient,
        publish: Box<rumqttc::v5::mqttbytes::v5::Publish>,
    },
}

impl AckToken {
    pub(crate) fn broker(tx: mpsc::UnboundedSender<u16>, pkid: u16) -> Self {
        AckToken(AckInner::Broker { tx, pkid })
    }

    pub(crate) fn external(
        client: rumqttc::v5::AsyncClient,
        publish: rumqttc::v5::mqttbytes::v5::Publish,
    ) -> Self {
        AckToken(AckInner::External {
            client,
            publish: Box::new(publish),
        })
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        // If the connection is gone already, the sender resends on its next session.
        match &self.0 {
            AckInner::Broker { tx, pkid } => {
                let _ = tx.send(*pkid);
            }
            AckInner::External { client, publish } => {
                let _ = client.try_ack(publish);
            }
        }
    }
}
