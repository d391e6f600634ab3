//! Commands to agents: identity, signing, publishing, and what comes back.
//!
//! The guarantees (see `docs/RECLAIM.md`):
//! * only the aggregator can issue a command: the frame is signed with the *target* node's key,
//!   which only the master key derives; the agent checks MAC, node, expiry and id;
//! * a command is stored with its id **before** it is published; after a restart every stored
//!   outstanding command is published again with the **same** id until a result arrives or it
//!   expires (the agent refuses an id it has seen, so a resend never runs twice, and the
//!   agent's own buffer re-delivers the result of one it ran);
//! * a new id only for a new step (a retry after a failure or expiry is a new step);
//! * a result is matched by id *and* node: a result for an unknown id, or from another node, is
//!   ignored and logged.

use crate::external::BrokerUrl;
use crate::ratelimit::LogLimiter;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use yunjian_broker::{AckToken, Broker};
use yunjian_protocol::{topics, CommandResult, Evidence};

/// A result from an agent, verified by ingest, with the PUBACK of its message: dropped (so
/// acknowledged) only once the result is stored; a crash before that makes the agent resend it.
#[derive(Debug)]
pub struct CommandReply {
    pub node: String,
    pub result: CommandResult,
    pub ack: Option<AckToken>,
    /// What the agent sent right before the result as evidence of the action (a wiping
    /// release's volumes), with that message's PUBACK: stored with the result, then released.
    pub evidence: Option<(Evidence, Option<AckToken>)>,
}

/// Where commands are published.
#[derive(Debug, Clone)]
pub enum Outlet {
    /// The embedded broker: straight into the node's session queue.
    Embedded(Broker),
    /// A client connection of its own on the external broker, with the rate limit of its
    /// warnings (shared by publishing and the connection task).
    External {
        client: rumqttc::v5::AsyncClient,
        log: Arc<LogLimiter>,
    },
    /// Nowhere (tests of the case flow): commands stay outstanding, visibly.
    Detached,
}

impl Outlet {
    pub async fn publish(&self, node: &str, frame: Vec<u8>) -> bool {
        let topic = topics::command(node);
        match self {
            Outlet::Embedded(b) => {
                b.publish(
                    &topic,
                    Bytes::from(frame),
                    rumqttc::mqttbytes::QoS::AtLeastOnce,
                    false,
                )
                .await;
                true
            }
            Outlet::External { client, log } => match client
                .publish(
                    topic.clone(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    frame,
                )
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    if let Some(n) = log.check() {
                        tracing::warn!(%topic, suppressed = n, "command not handed to the external broker: {e}; it is sent again later");
                    }
                    false
                }
            },
            Outlet::Detached => false,
        }
    }

    /// A publishing connection on an external broker (client id `{client_id}-cmd`), kept up
    /// until `shutdown`.
    pub fn external(
        url: &BrokerUrl,
        client_id: &str,
        mut shutdown: watch::Receiver<bool>,
    ) -> (Outlet, tokio::task::JoinHandle<()>) {
        use rumqttc::v5::{AsyncClient, MqttOptions};
        let mut opts = MqttOptions::new(format!("{client_id}-cmd"), url.host.clone(), url.port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let log = Arc::new(LogLimiter::new(30_000));
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                tokio::select! {
                    ev = eventloop.poll() => match ev {
                        Ok(_) => backoff = Duration::from_millis(250),
                        Err(e) => {
                            if let Some(n) = task_log.check() {
                                tracing::warn!(suppressed = n, "command connection to the external broker failed: {e}; retrying");
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = shutdown.changed() => return,
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(15));
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            }
        });
        (Outlet::External { client, log }, task)
    }
}
