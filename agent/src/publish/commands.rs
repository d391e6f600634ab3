//! Checking commands from the aggregator before they reach the agent, and the journal of
//! their results.
//!
//! A command is accepted only if its frame carries a valid MAC made with this node's key, names
//! this node, has not expired and has an id not seen before. The last [`SEEN_CAPACITY`] ids are
//! remembered, and kept in [`SEEN_FILE`] in the buffer directory when there is one, so a
//! command replayed after an agent restart is never executed again.
//!
//! Every result the agent sends goes first into the results journal ([`RESULTS_FILE`], the
//! last [`RESULTS_CAPACITY`] results, appended and fsync'd before the result is published). A
//! command whose id is journaled is answered with the journaled result again and not executed:
//! the aggregator retries a command whose result it never got (after its own restart, say),
//! and gets the outcome of the one execution, even past the command's expiry. A command
//! accepted earlier but without a journaled result is either still running here (nothing is
//! sent; its result follows) or was cut off by an agent restart: then it is answered, once and
//! for good, as failed with an unknown outcome, and not run again.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use yunjian_protocol::{decode, Body, Command, CommandResult, FrameError, NodeKey};

use super::buffer::{BufferError, FILE_MODE};

pub(crate) const SEEN_FILE: &str = "commands.seen";
pub(crate) const SEEN_CAPACITY: usize = 1024;
/// The results journal: one JSON object per line, `{"id":"<32 hex>","ok":..,"message":".."}`.
pub(crate) const RESULTS_FILE: &str = "commands.results";
/// Results kept, like the seen ids; the file is compacted when it holds twice as many lines.
pub(crate) const RESULTS_CAPACITY: usize = SEEN_CAPACITY;
/// Longest result message kept and sent, in bytes (cut at a character boundary).
pub(crate) const MAX_MESSAGE: usize = 2048;
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
    #[error("command id already accepted and still being carried out (replayed)")]
    InProgress,
}

/// What to do with an authentic command.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Never seen: hand it to the agent, then call [`CommandBook::accepted`].
    Fresh(Command),
    /// Seen before and answered: send this result again, execute nothing.
    Answered(CommandResult),
}

/// The seen ids, the results journal and the commands being carried out in this process.
#[derive(Debug)]
pub(crate) struct CommandBook {
    seen: SeenIds,
    results: Journal,
    running: HashSet<[u8; ID_LEN]>,
}

impl CommandBook {
    /// Load what is kept in `dir`; `None`: memory only.
    pub(crate) fn load(dir: Option<&Path>) -> Result<CommandBook, BufferError> {
        Ok(CommandBook {
            seen: SeenIds::load(dir)?,
            results: Journal::load(dir)?,
            running: HashSet::new(),
        })
    }

    /// Check a frame received on this node's command topic (see the module docs for the order
    /// of the checks). An id accepted before an agent restart and never answered gets its
    /// "outcome unknown" result journaled here.
    pub(crate) fn check(
        &mut self,
        frame: &[u8],
        node: &str,
        key: &NodeKey,
        now_ms: u64,
    ) -> Result<Verdict, Rejected> {
        let envelope = decode(frame, node, key)?;
        let Body::Command(command) = envelope.body else {
            return Err(Rejected::NotACommand(envelope.body.kind()));
        };
        if let Some(result) = self.results.get(&command.id) {
            return Ok(Verdict::Answered(result.clone()));
        }
        if command.expires_ms < now_ms {
            return Err(Rejected::Expired {
                expires_ms: command.expires_ms,
                now_ms,
            });
        }
        if self.running.contains(&command.id) {
            return Err(Rejected::InProgress);
        }
        if self.seen.contains(&command.id) {
            let result = CommandResult {
                id: command.id,
                ok: false,
                message: format!(
                    "{} {} was accepted before this agent restarted and has no recorded result; \
                     its outcome is unknown and it is not run again: check the VM in the host's \
                     guest report and send a new command if needed",
                    command.action.kind(),
                    hex(&command.id)
                ),
            };
            return Ok(Verdict::Answered(self.record(result)));
        }
        Ok(Verdict::Fresh(command))
    }

    /// `id` was handed to the agent: remember it as seen (persisted) and being carried out.
    pub(crate) fn accepted(&mut self, id: [u8; ID_LEN]) {
        if self.results.get(&id).is_none() {
            self.running.insert(id);
        }
        if let Err(error) = self.seen.insert(id) {
            tracing::warn!(%error, "could not record an accepted command id; a replay after a restart would not be recognised");
        }
    }

    /// Journal a result (fsync'd with a directory) before it is published; returns what to
    /// publish: the result with its message cut to [`MAX_MESSAGE`], or the result journaled
    /// first when the id already has one (a command has exactly one outcome).
    pub(crate) fn record(&mut self, mut result: CommandResult) -> CommandResult {
        self.running.remove(&result.id);
        if let Some(first) = self.results.get(&result.id) {
            if *first != result {
                tracing::warn!(id = %hex(&result.id), "a second, different result for a command; the first one stands");
            }
            return first.clone();
        }
        truncate(&mut result.message, MAX_MESSAGE);
        if let Err(error) = self.results.append(result.clone()) {
            tracing::error!(%error, id = %hex(&result.id), "could not journal a command result; a retried command would get no answer after a restart");
        }
        result
    }
}

/// Cut `s` to at most `max` bytes at a character boundary, marking the cut.
fn truncate(s: &mut String, max: usize) {
    const MARK: &str = " [...]";
    if s.len() <= max {
        return;
    }
    let mut end = max - MARK.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
}

/// Lower-case hex of a command id, for logs and the journal.
pub(crate) fn hex(id: &[u8; ID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; ID_LEN]> {
    if s.len() != 2 * ID_LEN || !s.is_ascii() {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// One line of the results journal.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: String,
    ok: bool,
    message: String,
}

/// The last [`RESULTS_CAPACITY`] results, oldest first, with their append-only file.
#[derive(Debug)]
struct Journal {
    results: VecDeque<CommandResult>,
    path: Option<PathBuf>,
    /// Lines in the file (compaction rewrites it with only the kept results).
    lines: usize,
}

impl Journal {
    fn load(dir: Option<&Path>) -> Result<Journal, BufferError> {
        let mut journal = Journal {
            results: VecDeque::new(),
            path: dir.map(|d| d.join(RESULTS_FILE)),
            lines: 0,
        };
        let Some(path) = journal.path.clone() else {
            return Ok(journal);
        };
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(journal),
            Err(source) => return Err(BufferError::Io { path, source }),
        };
        let mut damaged = 0usize;
        for line in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            journal.lines += 1;
            let parsed = serde_json::from_slice::<Line>(line).ok().and_then(|l| {
                Some(CommandResult {
                    id: unhex(&l.id)?,
                    ok: l.ok,
                    message: l.message,
                })
            });
            match parsed {
                Some(result) if journal.get(&result.id).is_none() => journal.keep(result),
                Some(_) => {}
                None => damaged += 1,
            }
        }
        if damaged > 0 {
            // a crash during an append leaves a torn last line
            tracing::warn!(path = %path.display(), damaged, "ignoring damaged lines of the command results journal");
            journal.compact()?;
        }
        Ok(journal)
    }

    fn get(&self, id: &[u8; ID_LEN]) -> Option<&CommandResult> {
        self.results.iter().rev().find(|r| r.id == *id)
    }

    fn keep(&mut self, result: CommandResult) {
        if self.results.len() == RESULTS_CAPACITY {
            self.results.pop_front();
        }
        self.results.push_back(result);
    }

    /// Keep `result` and append it to the file, synced.
    fn append(&mut self, result: CommandResult) -> Result<(), BufferError> {
        let line = line_of(&result);
        self.keep(result);
        let Some(path) = &self.path else {
            return Ok(());
        };
        if self.lines + 1 >= 2 * RESULTS_CAPACITY {
            return self.compact();
        }
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(path)
            .map_err(io)?;
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)?;
        self.lines += 1;
        Ok(())
    }

    /// Rewrite the file with the kept results only: temporary file, fsync, rename, fsync of
    /// the directory.
    fn compact(&mut self) -> Result<(), BufferError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("results.tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io)?;
        for result in &self.results {
            file.write_all(&line_of(result)).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.lines = self.results.len();
        Ok(())
    }
}

fn line_of(result: &CommandResult) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Line {
        id: hex(&result.id),
        ok: result.ok,
        message: result.message.clone(),
    })
    .expect("a string and a bool serialise");
    line.push(b'\n');
    line
}

/// The ids of the last accepted commands, oldest first.
#[derive(Debug)]
struct SeenIds {
    ids: VecDeque<[u8; ID_LEN]>,
    path: Option<PathBuf>,
}

impl SeenIds {
    /// Load the ids kept in `dir` (none if the file does not exist); `None`: memory only.
    fn load(dir: Option<&Path>) -> Result<SeenIds, BufferError> {
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

    fn contains(&self, id: &[u8; ID_LEN]) -> bool {
        self.ids.contains(id)
    }

    /// Remember `id` (forgetting the oldest beyond the capacity) and persist the list.
    fn insert(&mut self, id: [u8; ID_LEN]) -> Result<(), BufferError> {
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
            .mode(FILE_MODE)
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
    use yunjian_protocol::{encode, Action, Envelope, MasterKey, Role};

    const NOW: u64 = 1_700_000_000_000;

    fn command_frame(node: &str, key: &NodeKey, id: u8, expires_ms: u64) -> Vec<u8> {
        let cmd = Command {
            id: [id; 16],
            expires_ms,
            action: Action::Ping,
        };
        encode(&Envelope::new(node, 1, NOW, Body::Command(cmd)), key).unwrap()
    }

    fn result(id: u8, ok: bool, message: &str) -> CommandResult {
        CommandResult {
            id: [id; 16],
            ok,
            message: message.into(),
        }
    }

    fn fresh_id(verdict: Result<Verdict, Rejected>) -> [u8; 16] {
        match verdict {
            Ok(Verdict::Fresh(cmd)) => cmd.id,
            other => panic!("expected a fresh command, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_fresh_signed_command_once_and_resends_its_result() {
        let master = MasterKey::from_bytes([9; 32]);
        let key = master.node_key("h1", Role::Host);
        let mut book = CommandBook::load(None).unwrap();
        let frame = command_frame("h1", &key, 1, NOW + 60_000);
        let id = fresh_id(book.check(&frame, "h1", &key, NOW));
        assert_eq!(id, [1; 16]);
        book.accepted(id);
        assert!(
            matches!(
                book.check(&frame, "h1", &key, NOW),
                Err(Rejected::InProgress)
            ),
            "a replay while the command runs is refused"
        );
        let sent = book.record(result(1, true, "pong"));
        assert_eq!(sent, result(1, true, "pong"));
        assert_eq!(
            book.check(&frame, "h1", &key, NOW).unwrap(),
            Verdict::Answered(result(1, true, "pong"))
        );
        // the stored result is re-sent even after the command's expiry
        assert_eq!(
            book.check(&frame, "h1", &key, NOW + 3_600_000).unwrap(),
            Verdict::Answered(result(1, true, "pong"))
        );
        // a command has one outcome
        assert_eq!(
            book.record(result(1, false, "late")),
            result(1, true, "pong")
        );
    }

    #[test]
    fn refuses_forged_misaddressed_expired_and_foreign_bodies() {
        let master = MasterKey::from_bytes([9; 32]);
        let key = master.node_key("h1", Role::Host);
        let mut book = CommandBook::load(None).unwrap();
        let other = command_frame("h1", &master.node_key("h2", Role::Host), 2, NOW + 60_000);
        assert!(matches!(
            book.check(&other, "h1", &key, NOW),
            Err(Rejected::Frame(FrameError::BadMac))
        ));
        let misaddressed = command_frame("h2", &key, 3, NOW + 60_000);
        assert!(matches!(
            book.check(&misaddressed, "h1", &key, NOW),
            Err(Rejected::Frame(FrameError::NodeMismatch { .. }))
        ));
        let expired = command_frame("h1", &key, 4, NOW - 1);
        assert!(matches!(
            book.check(&expired, "h1", &key, NOW),
            Err(Rejected::Expired { .. })
        ));
        let status = encode(
            &Envelope::new("h1", 0, NOW, Body::Status(yunjian_protocol::Status::Online)),
            &key,
        )
        .unwrap();
        assert!(matches!(
            book.check(&status, "h1", &key, NOW),
            Err(Rejected::NotACommand("status"))
        ));
        assert!(matches!(
            book.check(b"\x01garbage", "h1", &key, NOW),
            Err(Rejected::Frame(_))
        ));
    }

    /// Issue 11 item 9: the buffer directory (signed reports, command ids and results) is the
    /// agent's own: created 0700, a loose one tightened, every file in it 0600.
    #[test]
    fn the_buffer_directory_and_its_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let master = MasterKey::from_bytes([9; 32]);
        let key = master.node_key("h1", Role::Host);
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/buffer");
        let (mut buffer, _) = super::super::buffer::Buffer::open(&dir, 1 << 20).unwrap();
        buffer.append(b"a report").unwrap();
        let mut book = CommandBook::load(Some(&dir)).unwrap();
        let id = fresh_id(book.check(&command_frame("h1", &key, 1, NOW + 60_000), "h1", &key, NOW));
        book.accepted(id);
        book.record(result(1, true, "VM web-01 stopped"));
        assert_eq!(mode(&dir), 0o700);
        let mut files: Vec<(String, u32)> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().into_string().unwrap(), mode(&e.path()))
            })
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                ("buffer.ack".to_string(), 0o600),
                ("buffer.epoch".to_string(), 0o600),
                ("buffer.seg".to_string(), 0o600),
                (RESULTS_FILE.to_string(), 0o600),
                (SEEN_FILE.to_string(), 0o600),
            ]
        );
        drop((buffer, book));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        super::super::buffer::Buffer::open(&dir, 1 << 20).unwrap();
        assert_eq!(mode(&dir), 0o700, "a loose directory is tightened");
    }

    #[test]
    fn results_survive_a_restart_and_an_unanswered_command_is_not_run_again() {
        let master = MasterKey::from_bytes([9; 32]);
        let key = master.node_key("h1", Role::Host);
        let dir = tempfile::tempdir().unwrap();
        let done = command_frame("h1", &key, 1, NOW + 60_000);
        let cut_off = command_frame("h1", &key, 2, NOW + 60_000);
        {
            let mut book = CommandBook::load(Some(dir.path())).unwrap();
            for frame in [&done, &cut_off] {
                let id = fresh_id(book.check(frame, "h1", &key, NOW));
                book.accepted(id);
            }
            book.record(result(1, true, "VM web-01 stopped"));
            // the agent dies while carrying out command 2
        }
        let mut book = CommandBook::load(Some(dir.path())).unwrap();
        assert_eq!(
            book.check(&done, "h1", &key, NOW).unwrap(),
            Verdict::Answered(result(1, true, "VM web-01 stopped"))
        );
        let Verdict::Answered(unknown) = book.check(&cut_off, "h1", &key, NOW).unwrap() else {
            panic!("an unanswered command from before the restart is answered, not run");
        };
        assert!(!unknown.ok && unknown.message.contains("outcome is unknown"));
        // that answer is final: journaled like any other
        let mut book = CommandBook::load(Some(dir.path())).unwrap();
        assert_eq!(
            book.check(&cut_off, "h1", &key, NOW).unwrap(),
            Verdict::Answered(unknown)
        );
    }

    #[test]
    fn journal_is_bounded_compacted_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let id = |i: usize| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            id
        };
        let mut journal = Journal::load(Some(dir.path())).unwrap();
        let total = 2 * RESULTS_CAPACITY + 10;
        for i in 0..total {
            journal
                .append(CommandResult {
                    id: id(i),
                    ok: i.is_multiple_of(2),
                    message: format!("result {i} 中文"),
                })
                .unwrap();
        }
        assert_eq!(journal.results.len(), RESULTS_CAPACITY);
        let path = dir.path().join(RESULTS_FILE);
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(
            (RESULTS_CAPACITY..2 * RESULTS_CAPACITY).contains(&lines),
            "compacted: {lines} lines"
        );
        // a torn append at the end
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"id\":\"00ff").unwrap();
        drop(file);

        let reloaded = Journal::load(Some(dir.path())).unwrap();
        assert_eq!(reloaded.results.len(), RESULTS_CAPACITY);
        assert!(reloaded.get(&id(total - RESULTS_CAPACITY - 1)).is_none());
        let last = reloaded.get(&id(total - 1)).unwrap();
        assert_eq!(last.message, format!("result {} 中文", total - 1));
        assert_eq!(last.ok, (total - 1).is_multiple_of(2));
        assert_eq!(
            fs::read_to_string(&path).unwrap().lines().count(),
            RESULTS_CAPACITY,
            "the damaged line is compacted away"
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let mut book = CommandBook::load(None).unwrap();
        let sent = book.record(result(5, false, &"错".repeat(MAX_MESSAGE)));
        assert!(sent.message.len() <= MAX_MESSAGE);
        assert!(sent.message.ends_with(" [...]"));
        assert_eq!(book.results.get(&[5; 16]), Some(&sent));
        assert_eq!(unhex(&hex(&[0xab; 16])), Some([0xab; 16]));
        assert_eq!(unhex("zz"), None);
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
