//! Commands to agents as stored: created before they are published, the same id on every
//! resend, a status the agent's result settles.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use yunjian_protocol::{encode, Action, Body, Command, Envelope, MasterKey, Role};

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
        // commands act on VMs through their hypervisor: only a host's key opens them
        encode(&env, &master.node_key(&self.node, Role::Host)).ok()
    }
}

/// 16 random bytes from the OS.
pub fn random_id() -> std::io::Result<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
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
        let env = decode(
            &frame,
            "rack1-h03",
            &master.node_key("rack1-h03", Role::Host),
        )
        .unwrap();
        let Body::Command(c) = env.body else {
            panic!("not a command")
        };
        assert_eq!(hex(&c.id), rec.id);
        assert_eq!(c.action, rec.action);
        assert!(decode(
            &frame,
            "rack1-h04",
            &master.node_key("rack1-h04", Role::Host)
        )
        .is_err());
        // a VM enrolled under the host's name cannot open it
        assert!(decode(
            &frame,
            "rack1-h03",
            &master.node_key("rack1-h03", Role::Guest)
        )
        .is_err());
        assert!(decode(
            &frame,
            "rack1-h03",
            &MasterKey::from_bytes([8; 32]).node_key("rack1-h03", Role::Host)
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
