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

use crate::broker::Broker;
use crate::external::BrokerUrl;
use crate::inbound::AckToken;
use crate::ratelimit::LogLimiter;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;
use yunjian_protocol::{encode, topics, Action, Body, Command, CommandResult, Envelope, MasterKey};

static PUBLISH_LOG: LogLimiter = LogLimiter::new(30_000);

/// Where a command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Stored, published (maybe several times with the same id), no result yet.
    Outstanding,
    Succeeded,
    Failed,
    /// No result before the expiry: the outcome is unknown until the agent's result arrives.
    Expired,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Outstanding => "outstanding",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Expired => "expired",
        }
    }
}

/// A command as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The 16-byte id in hex.
    pub id: String,
    /// The agent it goes to (the VM's hypervisor host).
    pub node: String,
    /// The reclaim case it serves, if any.
    pub case_id: Option<u64>,
    /// What it is for, e.g. `reclaim:12`, `antivirus:vm-cz-07`.
    pub purpose: String,
    pub action: Action,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// How many times it was published (same id each time).
    pub sends: u32,
    pub last_sent_ms: u64,
    pub status: CommandStatus,
    pub result_ms: Option<u64>,
    pub message: String,
}

impl CommandRecord {
    pub fn new(
        node: &str,
        case_id: Option<u64>,
        purpose: String,
        action: Action,
        now_ms: u64,
        ttl: Duration,
    ) -> std::io::Result<CommandRecord> {
        Ok(CommandRecord {
            id: hex(&random_id()?),
            node: node.into(),
            case_id,
            purpose,
            action,
            created_ms: now_ms,
            expires_ms: now_ms + ttl.as_millis() as u64,
            sends: 0,
            last_sent_ms: 0,
            status: CommandStatus::Outstanding,
            result_ms: None,
            message: String::new(),
        })
    }

    pub fn id_bytes(&self) -> Option<[u8; 16]> {
        unhex(&self.id)
    }

    /// The signed frame for the agent (the same bytes for every resend but the envelope time).
    pub fn frame(&self, master: &MasterKey, now_ms: u64) -> Option<Vec<u8>> {
        let cmd = Command {
            id: self.id_bytes()?,
            expires_ms: self.expires_ms,
            action: self.action.clone(),
        };
        // seq 0: commands are outside the node's report stream
        let env = Envelope::new(self.node.clone(), 0, now_ms, Body::Command(cmd));
        encode(&env, &master.node_key(&self.node)).ok()
    }
}

/// 16 random bytes from the OS.
pub fn random_id() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

pub fn hex(b: &[u8; 16]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A result from an agent, verified by ingest, with the PUBACK of its message: dropped (so
/// acknowledged) only once the result is stored; a crash before that makes the agent resend it.
#[derive(Debug)]
pub struct CommandReply {
    pub node: String,
    pub result: CommandResult,
    pub ack: Option<AckToken>,
}

/// Where commands are published.
#[derive(Debug, Clone)]
pub enum Outlet {
    /// The embedded broker: straight into the node's session queue.
    Embedded(Broker),
    /// A client connection of its own on the external broker.
    External(rumqttc::v5::AsyncClient),
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
            Outlet::External(c) => match c
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
                    if let Some(n) = PUBLISH_LOG.check() {
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
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                tokio::select! {
                    ev = eventloop.poll() => match ev {
                        Ok(_) => backoff = Duration::from_millis(250),
                        Err(e) => {
                            if let Some(n) = PUBLISH_LOG.check() {
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
        (Outlet::External(client), task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yunjian_protocol::{decode, VmRef};

    #[test]
    fn a_command_frame_verifies_only_with_the_target_nodes_key() {
        let master = MasterKey::from_bytes([9; 32]);
        let rec = CommandRecord::new(
            "rack1-h03",
            Some(4),
            "reclaim:4".into(),
            Action::Stop(
                VmRef {
                    uuid: "u-1".into(),
                    name: "vm1".into(),
                },
                "yunjian-reclaim-4".into(),
            ),
            1_000,
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(rec.expires_ms, 3_601_000);
        let frame = rec.frame(&master, 2_000).unwrap();
        let env = decode(&frame, "rack1-h03", &master.node_key("rack1-h03")).unwrap();
        let Body::Command(c) = env.body else {
            panic!("not a command")
        };
        assert_eq!(hex(&c.id), rec.id);
        assert_eq!(c.action, rec.action);
        assert!(decode(&frame, "rack1-h04", &master.node_key("rack1-h04")).is_err());
        assert!(decode(
            &frame,
            "rack1-h03",
            &MasterKey::from_bytes([8; 32]).node_key("rack1-h03")
        )
        .is_err());
        // ids are random and round-trip through hex
        let other =
            CommandRecord::new("n", None, "p".into(), Action::Ping, 0, Duration::ZERO).unwrap();
        assert_ne!(other.id, rec.id);
        assert_eq!(unhex(&rec.id).map(|b| hex(&b)), Some(rec.id.clone()));
        assert_eq!(unhex("zz"), None);
    }
}
