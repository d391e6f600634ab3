//! Checking commands from the aggregator before they reach the agent.
//!
//! A command is accepted only if its frame carries a valid MAC made with this node's key, names
//! this node, has not expired and has an id not seen before. The last [`SEEN_CAPACITY`] ids are
//! remembered, and kept in [`SEEN_FILE`] in the buffer directory when there is one, so a
//! command replayed after an agent restart is refused as well.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use yunjian_protocol::{decode, Body, Command, FrameError, NodeKey};

use super::buffer::BufferError;

pub(crate) const SEEN_FILE: &str = "commands.seen";
pub(crate) const SEEN_CAPACITY: usize = 1024;
const ID_LEN: usize = 16;

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("undecodable or unauthentic frame: {0}")]
    Frame(#[from] FrameError),
    #[error("a {0} message on the command topic")]
    NotACommand(&'static str),
    #[error("expired at {expires_ms} ms (now {now_ms} ms)")]
    Expired { expires_ms: u64, now_ms: u64 },
    #[error("command id already seen (replayed)")]
    Replayed,
}

/// Check a frame received on this node's command topic.
pub(crate) fn verify(
    frame: &[u8],
    node: &str,
    key: &NodeKey,
    now_ms: u64,
    seen: &SeenIds,
) -> Result<Command, Rejected> {
    let envelope = decode(frame, node, key)?;
    let Body::Command(command) = envelope.body else {
        return Err(Rejected::NotACommand(envelope.body.kind()));
    };
    if command.expires_ms < now_ms {
        return Err(Rejected::Expired {
            expires_ms: command.expires_ms,
            now_ms,
        });
    }
    if seen.contains(&command.id) {
        return Err(Rejected::Replayed);
    }
    Ok(command)
}

/// The ids of the last accepted commands, oldest first.
#[derive(Debug)]
pub(crate) struct SeenIds {
    ids: VecDeque<[u8; ID_LEN]>,
    path: Option<PathBuf>,
}

impl SeenIds {
    /// Load the ids kept in `dir` (none if the file does not exist); `None`: memory only.
    pub(crate) fn load(dir: Option<&Path>) -> Result<SeenIds, BufferError> {
        let Some(dir) = dir else {
            return Ok(SeenIds {
                ids: VecDeque::new(),
                path: None,
            });
        };
        let path = dir.join(SEEN_FILE);
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(BufferError::Io { path, source }),
        };
        // a torn write leaves a partial id at the end: ignore it
        let mut ids: VecDeque<[u8; ID_LEN]> = raw
            .chunks_exact(ID_LEN)
            .map(|c| c.try_into().expect("chunks of ID_LEN"))
            .collect();
        while ids.len() > SEEN_CAPACITY {
            ids.pop_front();
        }
        Ok(SeenIds {
            ids,
            path: Some(path),
        })
    }

    pub(crate) fn contains(&self, id: &[u8; ID_LEN]) -> bool {
        self.ids.contains(id)
    }

    /// Remember `id` (forgetting the oldest beyond the capacity) and persist the list.
    pub(crate) fn insert(&mut self, id: [u8; ID_LEN]) -> Result<(), BufferError> {
        if self.ids.len() == SEEN_CAPACITY {
            self.ids.pop_front();
        }
        self.ids.push_back(id);
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("seen.tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        let (a, b) = self.ids.as_slices();
        for id in a.iter().chain(b) {
            file.write_all(id).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yunjian_protocol::{encode, Action, Envelope, MasterKey};

    const NOW: u64 = 1_700_000_000_000;

    fn command_frame(node: &str, key: &NodeKey, id: u8, expires_ms: u64) -> Vec<u8> {
        let cmd = Command {
            id: [id; 16],
            expires_ms,
            action: Action::Ping,
        };
        encode(&Envelope::new(node, 1, NOW, Body::Command(cmd)), key).unwrap()
    }

    #[test]
    fn accepts_a_fresh_signed_command_once() {
        let master = MasterKey::from_bytes([9; 32]);
        let key = master.node_key("h1");
        let mut seen = SeenIds::load(None).unwrap();
        let frame = command_frame("h1", &key, 1, NOW + 60_000);
        let cmd = verify(&frame, "h1", &key, NOW, &seen).unwrap();
        assert_eq!(cmd.id, [1; 16]);
        seen.insert(cmd.id).unwrap();
        assert!(matches!(
            verify(&frame, "h1", &key, NOW, &seen),
            Err(Rejected::Replayed)
        ));
    }

    #[test]
    fn refuses_forged_misaddressed_expired_and_foreign_bodies() {
        let master = MasterKey::from_bytes([9; 32]);
        let key = master.node_key("h1");
        let seen = SeenIds::load(None).unwrap();
        let other = command_frame("h1", &master.node_key("h2"), 2, NOW + 60_000);
        assert!(matches!(
            verify(&other, "h1", &key, NOW, &seen),
            Err(Rejected::Frame(FrameError::BadMac))
        ));
        let misaddressed = command_frame("h2", &key, 3, NOW + 60_000);
        assert!(matches!(
            verify(&misaddressed, "h1", &key, NOW, &seen),
            Err(Rejected::Frame(FrameError::NodeMismatch { .. }))
        ));
        let expired = command_frame("h1", &key, 4, NOW - 1);
        assert!(matches!(
            verify(&expired, "h1", &key, NOW, &seen),
            Err(Rejected::Expired { .. })
        ));
        let status = encode(
            &Envelope::new("h1", 0, NOW, Body::Status(yunjian_protocol::Status::Online)),
            &key,
        )
        .unwrap();
        assert!(matches!(
            verify(&status, "h1", &key, NOW, &seen),
            Err(Rejected::NotACommand("status"))
        ));
        assert!(matches!(
            verify(b"\x01garbage", "h1", &key, NOW, &seen),
            Err(Rejected::Frame(_))
        ));
    }

    #[test]
    fn seen_ids_survive_a_restart_and_stay_bounded() {
        let id = |i: u32| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id
        };
        let dir = tempfile::tempdir().unwrap();
        // a file from an earlier run, one id over the capacity, with a torn last id
        let mut raw: Vec<u8> = (0..=SEEN_CAPACITY as u32).flat_map(id).collect();
        raw.extend_from_slice(&[7; 5]);
        fs::write(dir.path().join(SEEN_FILE), raw).unwrap();

        let mut seen = SeenIds::load(Some(dir.path())).unwrap();
        assert_eq!(seen.ids.len(), SEEN_CAPACITY);
        assert!(
            !seen.contains(&id(0)),
            "the oldest id beyond the capacity is forgotten"
        );
        assert!(seen.contains(&id(1)) && seen.contains(&id(SEEN_CAPACITY as u32)));
        seen.insert(id(5000)).unwrap();

        let reloaded = SeenIds::load(Some(dir.path())).unwrap();
        assert_eq!(reloaded.ids.len(), SEEN_CAPACITY);
        assert!(reloaded.contains(&id(5000)));
        assert!(!reloaded.contains(&id(1)));
        assert_eq!(
            fs::metadata(dir.path().join(SEEN_FILE)).unwrap().len(),
            (SEEN_CAPACITY * 16) as u64
        );
    }
}
