//! The bounded buffer of report-topic frames the broker has not acknowledged yet.
//!
//! Every frame enters the buffer (and, in directory mode, the segment file) before it is handed
//! to MQTT, and leaves it only when the broker's PubAck for it arrives, or when the size cap
//! forces the oldest out. The buffer is also the authority for sequence numbers: it hands out
//! the next one and, in directory mode, keeps them increasing across restarts. The on-disk
//! format is described in the [module docs](super).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use yunjian_protocol::MAX_FRAME_LEN;

/// The segment file: a header, then one record per frame, oldest first.
pub(crate) const SEGMENT_FILE: &str = "buffer.seg";
/// The acknowledgement watermark: every seq at or below it is done.
pub(crate) const ACK_FILE: &str = "buffer.ack";
/// The buffer directory and its files are the agent's own: signed reports waiting for the
/// broker, command results and the ids of commands already run.
pub(crate) const DIR_MODE: u32 = 0o700;
pub(crate) const FILE_MODE: u32 = 0o600;
const SEGMENT_MAGIC: &[u8; 8] = b"YJBUF001";
/// Magic (8 bytes) + the next-seq floor (u64 LE).
const SEGMENT_HEADER_LEN: u64 = 16;
/// Frame length (u32 LE) + CRC-32 (u32 LE) + seq (u64 LE).
const RECORD_HEADER_LEN: u64 = 16;
const ACK_MAGIC: &[u8; 4] = b"YJAK";
/// The sequence-number epoch of the buffer: drawn when the buffer is created.
pub(crate) const EPOCH_FILE: &str = "buffer.epoch";
const EPOCH_MAGIC: &[u8; 4] = b"YJEP";
/// Magic (4 bytes) + epoch (u64 LE) + CRC-32 of the first 12 bytes (u32 LE).
const EPOCH_LEN: usize = 16;
/// Magic (4 bytes) + watermark (u64 LE) + CRC-32 of the first 12 bytes (u32 LE).
const ACK_LEN: usize = 16;
/// The dead prefix of the segment (acknowledged or dropped records) is rewritten away once it
/// is at least this large and at least as large as the live part.
const COMPACT_MIN_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("report buffer {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("report buffer {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A random non-zero epoch.
fn new_epoch() -> u64 {
    let mut bytes = [0u8; 8];
    // the OS's randomness; should it fail, the clock still separates two buffers' epochs
    if getrandom::fill(&mut bytes).is_err() {
        bytes = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .to_le_bytes();
    }
    u64::from_le_bytes(bytes).max(1)
}

fn epoch_record(epoch: u64) -> [u8; EPOCH_LEN] {
    let mut rec = [0u8; EPOCH_LEN];
    rec[..4].copy_from_slice(EPOCH_MAGIC);
    rec[4..12].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&rec[..12]);
    rec[12..].copy_from_slice(&crc.to_le_bytes());
    rec
}

fn parse_epoch(rec: &[u8]) -> Option<u64> {
    let rec: &[u8; EPOCH_LEN] = rec.try_into().ok()?;
    let crc = u32::from_le_bytes(rec[12..].try_into().ok()?);
    let epoch = u64::from_le_bytes(rec[4..12].try_into().ok()?);
    (&rec[..4] == EPOCH_MAGIC && crc32fast::hash(&rec[..12]) == crc && epoch != 0).then_some(epoch)
}

/// The buffer directory's epoch: read from [`EPOCH_FILE`], or drawn and written (synced, via a
/// temporary file and rename) when the file is missing or damaged. A new epoch with the
/// sequence numbers continuing is harmless: the receiver only restarts its count when the
/// numbers go back.
fn open_epoch(dir: &Path) -> Result<u64, BufferError> {
    let path = dir.join(EPOCH_FILE);
    match fs::read(&path) {
        Ok(rec) => {
            if let Some(epoch) = parse_epoch(&rec) {
                return Ok(epoch);
            }
            tracing::warn!(path = %path.display(), "report buffer epoch file is damaged; drawing a new epoch");
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    let epoch = new_epoch();
    let tmp = dir.join(format!("{EPOCH_FILE}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(&epoch_record(epoch))
        .and_then(|()| file.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(epoch)
}

/// Where a buffered frame's bytes are.
#[derive(Debug)]
enum Data {
    Memory(Box<[u8]>),
    /// Offset of the record (its header) in the segment file.
    Disk(u64),
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    len: u32,
    /// The session in which the frame was last handed to MQTT (0: not in this process).
    sent_session: u32,
    /// Handed to MQTT at least once before, possibly by an earlier process.
    tried: bool,
    acked: bool,
    data: Data,
}

impl Entry {
    fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN + u64::from(self.len)
    }
}

#[derive(Debug)]
struct Segment {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    ack_path: PathBuf,
    ack: File,
    /// Where the next record goes.
    end: u64,
    /// Bookkeeping (watermark, compaction) is failing; logged once until it works again.
    failing: bool,
}

/// A frame chosen for sending.
#[derive(Debug)]
pub(crate) struct Next {
    pub seq: u64,
    pub frame: Vec<u8>,
    /// It was handed to MQTT before (an earlier session or process): this is a replay.
    pub replay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub seq: u64,
    /// Oldest frames dropped to make room.
    pub dropped: u64,
}

#[derive(Debug)]
pub(crate) struct Buffer {
    entries: VecDeque<Entry>,
    /// Sum of the entries' record lengths: what `max_bytes` bounds.
    bytes: u64,
    max_bytes: u64,
    next_seq: u64,
    /// The epoch the sequence numbers count in (announced in every `Hello`).
    epoch: u64,
    /// Current MQTT session; bumped on every ConnAck.
    session: u32,
    /// Every entry before it was already handed to MQTT in this session (or is acked).
    cursor: usize,
    disk: Option<Segment>,
}

impl Buffer {
    /// A buffer that lives in memory only; sequence numbers start at 1 in a new epoch.
    pub(crate) fn memory(max_bytes: u64) -> Buffer {
        Buffer {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
            next_seq: 1,
            epoch: new_epoch(),
            session: 0,
            cursor: 0,
            disk: None,
        }
    }

    /// Open (or create) the buffer in `dir`, restoring every frame not acknowledged yet.
    ///
    /// A damaged or half-written tail (a crash during an append) is cut off with a warning.
    /// Returns the buffer and how many restored frames had to be dropped to fit `max_bytes`.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<(Buffer, u64), BufferError> {
        private_dir(dir).map_err(io_err(dir))?;
        let ack_path = dir.join(ACK_FILE);
        let ack = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&ack_path)
            .map_err(io_err(&ack_path))?;
        let watermark = read_watermark(&ack, &ack_path)?;

        let path = dir.join(SEGMENT_FILE);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_segment(dir, &path, watermark + 1, None).map_err(io_err(&path))?
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let (floor, scan) = scan_segment(&file, &path)?;
        if scan.valid_end < scan.file_len {
            tracing::warn!(
                path = %path.display(),
                discarded_bytes = scan.file_len - scan.valid_end,
                "report buffer ends with an incomplete or damaged record (interrupted write); cutting it off"
            );
            file.set_len(scan.valid_end).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }

        let mut entries = VecDeque::new();
        let mut bytes = 0;
        let mut last_seq = 0;
        for (offset, seq, len) in scan.records {
            last_seq = seq;
            if seq > watermark {
                let entry = Entry {
                    seq,
                    len,
                    sent_session: 0,
                    tried: true,
                    acked: false,
                    data: Data::Disk(offset),
                };
                bytes += entry.record_len();
                entries.push_back(entry);
            }
        }
        let epoch = open_epoch(dir)?;
        let mut buffer = Buffer {
            entries,
            bytes,
            max_bytes,
            next_seq: floor.max(watermark + 1).max(last_seq + 1).max(1),
            epoch,
            session: 0,
            cursor: 0,
            disk: Some(Segment {
                dir: dir.to_path_buf(),
                path,
                file,
                ack_path,
                ack,
                end: scan.valid_end,
                failing: false,
            }),
        };
        let dropped = buffer.enforce_cap();
        Ok((buffer, dropped))
    }

    /// The epoch this buffer's sequence numbers count in.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The seq the next appended frame must carry.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Frames waiting for their acknowledgement (including those in flight).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append a frame carrying [`Buffer::next_seq`]. In directory mode the record is written and
    /// `fdatasync`ed before this returns. Then the oldest frames are dropped while the buffer is
    /// over its cap (the newest frame is always kept).
    pub(crate) fn append(&mut self, frame: &[u8]) -> Result<Appended, BufferError> {
        let seq = self.next_seq;
        let len = u32::try_from(frame.len()).map_err(|_| BufferError::Corrupt {
            path: self.location(),
            reason: format!("frame of {} bytes is too large to buffer", frame.len()),
        })?;
        let data = match &mut self.disk {
            None => Data::Memory(frame.into()),
            Some(seg) => Data::Disk(seg.append(seq, frame).map_err(io_err(&seg.path))?),
        };
        let entry = Entry {
            seq,
            len,
            sent_session: 0,
            tried: false,
            acked: false,
            data,
        };
        self.bytes += entry.record_len();
        self.entries.push_back(entry);
        self.next_seq += 1;
        let dropped = self.enforce_cap();
        Ok(Appended { seq, dropped })
    }

    /// A new MQTT session: every waiting frame is due again.
    pub(crate) fn begin_session(&mut self) {
        self.session = self.session.wrapping_add(1).max(1);
        self.cursor = 0;
    }

    /// The oldest frame not yet handed to MQTT in this session. Call [`Buffer::mark_sent`] once
    /// it was handed over.
    pub(crate) fn peek_unsent(&mut self) -> Result<Option<Next>, BufferError> {
        while self
            .entries
            .get(self.cursor)
            .is_some_and(|e| e.acked || e.sent_session == self.session)
        {
            self.cursor += 1;
        }
        let Some(entry) = self.entries.get(self.cursor) else {
            return Ok(None);
        };
        let frame = match (&entry.data, &self.disk) {
            (Data::Memory(frame), _) => frame.to_vec(),
            (Data::Disk(offset), Some(seg)) => {
                let mut frame = vec![0; entry.len as usize];
                seg.file
                    .read_exact_at(&mut frame, offset + RECORD_HEADER_LEN)
                    .map_err(io_err(&seg.path))?;
                frame
            }
            (Data::Disk(_), None) => unreachable!("disk entries exist only with a segment"),
        };
        Ok(Some(Next {
            seq: entry.seq,
            frame,
            replay: entry.tried,
        }))
    }

    /// Record that `seq` was handed to MQTT in the current session.
    pub(crate) fn mark_sent(&mut self, seq: u64) {
        if let Ok(i) = self.entries.binary_search_by_key(&seq, |e| e.seq) {
            let entry = &mut self.entries[i];
            entry.sent_session = self.session;
            entry.tried = true;
        }
    }

    /// The broker acknowledged `seq`. Returns whether it was still waiting (not acked before and
    /// not dropped). Acknowledged frames leave the buffer from the front, in seq order.
    pub(crate) fn ack(&mut self, seq: u64) -> bool {
        let Ok(i) = self.entries.binary_search_by_key(&seq, |e| e.seq) else {
            return false;
        };
        if std::mem::replace(&mut self.entries[i].acked, true) {
            return false;
        }
        let mut last = None;
        while self.entries.front().is_some_and(|e| e.acked) {
            last = self.pop_front();
        }
        if let Some(seq) = last {
            self.retire_through(seq);
        }
        true
    }

    /// Make the watermark durable (clean shutdown), so a later power loss replays nothing
    /// already acknowledged.
    pub(crate) fn sync(&self) -> Result<(), BufferError> {
        match &self.disk {
            Some(seg) => seg.ack.sync_data().map_err(io_err(&seg.ack_path)),
            None => Ok(()),
        }
    }

    fn location(&self) -> PathBuf {
        self.disk
            .as_ref()
            .map_or_else(|| PathBuf::from("<memory>"), |s| s.path.clone())
    }

    fn pop_front(&mut self) -> Option<u64> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.record_len();
        self.cursor = self.cursor.saturating_sub(1);
        if self.entries.is_empty() && self.entries.capacity() > 64 {
            // after a long outage: give the memory back
            self.entries.shrink_to(16);
        }
        Some(entry.seq)
    }

    fn enforce_cap(&mut self) -> u64 {
        let mut dropped = 0;
        let mut last = None;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            last = self.pop_front();
            dropped += 1;
        }
        if let Some(seq) = last {
            self.retire_through(seq);
        }
        dropped
    }

    /// Every frame up to `seq` is done (acknowledged or dropped): persist the watermark and
    /// compact the segment when its dead prefix has grown large.
    ///
    /// A failure here loses nothing (the memory state is right, and a stale watermark only
    /// means duplicates after a restart), so it is logged once per failing period, not returned.
    fn retire_through(&mut self, seq: u64) {
        let Some(seg) = &mut self.disk else {
            return;
        };
        let live_start = match self.entries.front() {
            Some(Entry {
                data: Data::Disk(offset),
                ..
            }) => *offset,
            _ => seg.end,
        };
        let dead = live_start - SEGMENT_HEADER_LEN;
        let live = seg.end - live_start;
        let result = seg
            .ack
            .write_all_at(&encode_watermark(seq), 0)
            .map_err(io_err(&seg.ack_path))
            .and_then(|()| {
                if dead < COMPACT_MIN_BYTES.max(live) {
                    return Ok(());
                }
                seg.compact(live_start, self.next_seq)
                    .map_err(io_err(&seg.path))?;
                for entry in &mut self.entries {
                    if let Data::Disk(offset) = &mut entry.data {
                        *offset = *offset - live_start + SEGMENT_HEADER_LEN;
                    }
                }
                Ok(())
            });
        match result {
            Ok(()) if std::mem::take(&mut seg.failing) => {
                tracing::info!(path = %seg.path.display(), "report buffer bookkeeping works again");
            }
            Ok(()) => {}
            Err(error) if !std::mem::replace(&mut seg.failing, true) => {
                tracing::warn!(
                    %error,
                    "cannot record progress in the report buffer; acknowledged frames may be sent again after a restart"
                );
            }
            Err(_) => {}
        }
    }
}

impl Segment {
    /// Write one record at the end and `fdatasync` it. Returns its offset. On failure the file
    /// is cut back so no partial record stays in front of later ones.
    fn append(&mut self, seq: u64, frame: &[u8]) -> io::Result<u64> {
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN as usize + frame.len());
        record.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        record.extend_from_slice(&record_crc(seq, frame).to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(frame);
        let offset = self.end;
        if let Err(e) = self
            .file
            .write_all_at(&record, offset)
            .and_then(|()| self.file.sync_data())
        {
            // best effort: the scan on the next start would cut it off anyway
            let _ = self.file.set_len(offset);
            return Err(e);
        }
        self.end += record.len() as u64;
        Ok(offset)
    }

    /// Replace the segment by one holding only the live records (from `live_start` on).
    fn compact(&mut self, live_start: u64, next_seq: u64) -> io::Result<()> {
        let live = (live_start, self.end - live_start);
        self.file = write_segment(&self.dir, &self.path, next_seq, Some((&self.file, live)))?;
        self.end = SEGMENT_HEADER_LEN + live.1;
        Ok(())
    }
}

/// Create the buffer directory `0700`; one that group or others may enter is tightened, with
/// a warning.
fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
        tracing::warn!(
            dir = %dir.display(),
            was = %format!("{mode:04o}"),
            "the report buffer directory was open to other users; tightened to 0700"
        );
    }
    Ok(())
}

/// Atomically (temp file + rename) write a segment with the given next-seq floor and a copy of
/// `src`'s byte range `(start, len)`. Returns the new file opened for reading and writing.
fn write_segment(
    dir: &Path,
    path: &Path,
    next_seq: u64,
    src: Option<(&File, (u64, u64))>,
) -> io::Result<File> {
    let tmp_path = path.with_extension("seg.tmp");
    let mut tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp_path)?;
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..].copy_from_slice(&next_seq.to_le_bytes());
    tmp.write_all(&header)?;
    if let Some((mut file, (start, len))) = src {
        file.seek(SeekFrom::Start(start))?;
        let copied = io::copy(&mut file.take(len), &mut tmp)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("segment shorter than expected while compacting ({copied} of {len} bytes)"),
            ));
        }
    }
    tmp.sync_all()?;
    fs::rename(&tmp_path, path)?;
    // From here on the new file is the segment, whatever happens to the directory sync.
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(%error, dir = %dir.display(), "cannot sync the report buffer directory");
    }
    Ok(tmp)
}

struct Scan {
    /// (offset, seq, frame length) of every valid record.
    records: Vec<(u64, u64, u32)>,
    valid_end: u64,
    file_len: u64,
}

/// Check the header and walk the records; stop at the first incomplete, damaged or out-of-order
/// one. Returns the header's next-seq floor and what was found.
fn scan_segment(file: &File, path: &Path) -> Result<(u64, Scan), BufferError> {
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    if file_len < SEGMENT_HEADER_LEN
        || file.read_exact_at(&mut header, 0).is_err()
        || &header[..8] != SEGMENT_MAGIC
    {
        return Err(BufferError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a Yunjian report buffer (bad header); move it away to start afresh".into(),
        });
    }
    let floor = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN))
        .map_err(io_err(path))?;
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    let mut frame = Vec::new();
    let mut prev_seq = 0;
    loop {
        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        if reader.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        let end = offset + RECORD_HEADER_LEN + u64::from(len);
        if len == 0 || len as usize > MAX_FRAME_LEN || end > file_len || seq <= prev_seq {
            break;
        }
        frame.resize(len as usize, 0);
        if reader.read_exact(&mut frame).is_err() || record_crc(seq, &frame) != crc {
            break;
        }
        records.push((offset, seq, len));
        prev_seq = seq;
        offset = end;
    }
    Ok((
        floor,
        Scan {
            records,
            valid_end: offset,
            file_len,
        },
    ))
}

fn encode_watermark(seq: u64) -> [u8; ACK_LEN] {
    let mut out = [0u8; ACK_LEN];
    out[..4].copy_from_slice(ACK_MAGIC);
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..12]);
    out[12..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The watermark in the ack file; 0 (replay everything: duplicates, never losses) when the
/// file is new or unreadable.
fn read_watermark(file: &File, path: &Path) -> Result<u64, BufferError> {
    let len = file.metadata().map_err(io_err(path))?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut raw = [0u8; ACK_LEN];
    let valid = len == ACK_LEN as u64
        && file.read_exact_at(&mut raw, 0).is_ok()
        && &raw[..4] == ACK_MAGIC
        && crc32fast::hash(&raw[..12]).to_le_bytes() == raw[12..];
    if !valid {
        tracing::warn!(
            path = %path.display(),
            "report buffer acknowledgement file is damaged; replaying every buffered frame"
        );
        return Ok(0);
    }
    Ok(u64::from_le_bytes(raw[4..12].try_into().expect("8 bytes")))
}

/// CRC-32 (IEEE 802.3, the one of zlib and PNG) of a record's seq (u64 LE) and frame.
fn record_crc(seq: u64, frame: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(frame);
    crc.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, len: usize) -> Vec<u8> {
        let mut f = vec![(seq % 251) as u8; len];
        f[..8].copy_from_slice(&seq.to_le_bytes());
        f
    }

    /// Hand every unsent frame over and return their seqs.
    fn send_all(b: &mut Buffer) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(next) = b.peek_unsent().unwrap() {
            assert_eq!(next.frame, frame(next.seq, next.frame.len()));
            b.mark_sent(next.seq);
            out.push(next.seq);
        }
        out
    }

    #[test]
    fn record_crc_is_crc32_ieee_over_seq_then_frame() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        // the seq's 8 little-endian bytes are "12345678", the frame "9": the standard check value
        assert_eq!(
            record_crc(u64::from_le_bytes(*b"12345678"), b"9"),
            0xCBF4_3926
        );
    }

    /// A segment and a watermark in the on-disk format, their CRCs pinned as literals: buffers
    /// written by earlier versions still read, and a new record is byte for byte what they
    /// wrote.
    #[test]
    fn buffer_files_in_the_pinned_format_read_and_new_records_match_it() {
        fn record(seq: u64, crc: u32, frame: &[u8]) -> Vec<u8> {
            let mut r = Vec::new();
            r.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            r.extend_from_slice(&crc.to_le_bytes());
            r.extend_from_slice(&seq.to_le_bytes());
            r.extend_from_slice(frame);
            r
        }
        let dir = tempfile::tempdir().unwrap();
        let mut seg = b"YJBUF001".to_vec();
        seg.extend_from_slice(&1u64.to_le_bytes());
        seg.extend(record(1, 0xD208_5F66, b"report one"));
        seg.extend(record(2, 0x5328_8E93, b"report two"));
        fs::write(dir.path().join(SEGMENT_FILE), &seg).unwrap();
        let mut ack = b"YJAK".to_vec();
        ack.extend_from_slice(&1u64.to_le_bytes());
        ack.extend_from_slice(&0x0FF5_1643u32.to_le_bytes());
        fs::write(dir.path().join(ACK_FILE), &ack).unwrap();

        let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((b.len(), b.next_seq()), (1, 3), "1 acknowledged, 2 kept");
        b.begin_session();
        let next = b.peek_unsent().unwrap().unwrap();
        assert_eq!((next.seq, &next.frame[..]), (2, &b"report two"[..]));
        assert_eq!(b.append(b"report three").unwrap().seq, 3);
        drop(b);
        let written = fs::read(dir.path().join(SEGMENT_FILE)).unwrap();
        assert!(written.ends_with(&record(3, 0x4D04_70B0, b"report three")));
        assert_eq!(encode_watermark(1)[..], ack[..]);
    }

    /// The epoch stays with its buffer directory across restarts; a wiped directory, a
    /// damaged epoch file or a memory-only buffer each count in a new one.
    #[test]
    fn the_epoch_lives_with_the_buffer_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        let epoch = b.epoch();
        assert_ne!(epoch, 0);
        b.append(&frame(1, 40)).unwrap();
        drop(b);
        let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            (b.epoch(), b.next_seq()),
            (epoch, 2),
            "same buffer, same count"
        );
        drop(b);
        // the pinned layout: magic, epoch, CRC-32 of both
        let rec = fs::read(dir.path().join(EPOCH_FILE)).unwrap();
        assert_eq!(rec[..], epoch_record(epoch)[..]);
        assert_eq!(&rec[..4], b"YJEP");
        assert_eq!(rec[4..12], epoch.to_le_bytes());

        fs::write(dir.path().join(EPOCH_FILE), b"YJEP garbage....").unwrap();
        let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_ne!(b.epoch(), epoch, "a damaged epoch file draws a new epoch");
        assert_eq!(b.next_seq(), 2, "the numbers continue all the same");
        drop(b);

        let wiped = tempfile::tempdir().unwrap();
        let (b, _) = Buffer::open(wiped.path(), 1 << 20).unwrap();
        assert_ne!(b.epoch(), epoch);
        assert_eq!(b.next_seq(), 1);
        assert_ne!(Buffer::memory(1).epoch(), Buffer::memory(1).epoch());
    }

    #[test]
    fn memory_buffer_hands_out_in_order_and_forgets_acked_frames() {
        let mut b = Buffer::memory(1 << 20);
        for seq in 1..=5 {
            assert_eq!(b.next_seq(), seq);
            assert_eq!(
                b.append(&frame(seq, 40)).unwrap(),
                Appended { seq, dropped: 0 }
            );
        }
        b.begin_session();
        assert_eq!(send_all(&mut b), vec![1, 2, 3, 4, 5]);
        // acks out of order: 2 is kept until 1 is acked, then both leave
        assert!(b.ack(2));
        assert!(!b.ack(2), "a second ack for the same seq is not counted");
        assert_eq!(b.len(), 5);
        assert!(b.ack(1));
        assert_eq!(b.len(), 3);
        // a new session (reconnect) replays what is left, skipping the acked-out-of-order 4
        assert!(b.ack(4));
        b.begin_session();
        let next = b.peek_unsent().unwrap().unwrap();
        assert_eq!((next.seq, next.replay), (3, true));
        assert_eq!(send_all(&mut b), vec![3, 5]);
        assert!(b.ack(3) && b.ack(5));
        assert!(b.is_empty());
        assert!(!b.ack(9));
    }

    #[test]
    fn overflow_drops_the_oldest_and_keeps_the_newest() {
        // room for three 100-byte frames (116 bytes each with the record header)
        let mut b = Buffer::memory(3 * 116);
        for seq in 1..=3 {
            assert_eq!(b.append(&frame(seq, 100)).unwrap().dropped, 0);
        }
        assert_eq!(
            b.append(&frame(4, 100)).unwrap(),
            Appended { seq: 4, dropped: 1 }
        );
        assert_eq!(
            b.append(&frame(5, 150)).unwrap(),
            Appended { seq: 5, dropped: 2 }
        );
        b.begin_session();
        assert_eq!(send_all(&mut b), vec![4, 5]);
        // a frame larger than the whole cap is still kept, alone
        assert_eq!(
            b.append(&frame(6, 400)).unwrap(),
            Appended { seq: 6, dropped: 2 }
        );
        assert_eq!(b.len(), 1);
        // an ack for a dropped frame is ignored
        assert!(!b.ack(4));
    }

    #[test]
    fn restart_restores_unacked_frames_and_continues_the_seq() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut b, dropped) = Buffer::open(dir.path(), 1 << 20).unwrap();
            assert_eq!((dropped, b.next_seq()), (0, 1));
            for seq in 1..=6 {
                b.append(&frame(seq, 64)).unwrap();
            }
            b.begin_session();
            send_all(&mut b);
            for seq in [1, 2, 4] {
                assert!(b.ack(seq));
            }
        }
        let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.next_seq(), 7);
        b.begin_session();
        let first = b.peek_unsent().unwrap().unwrap();
        assert!(first.replay, "restored frames count as replays");
        // 4 was acked out of order but is above the watermark: replayed, a harmless duplicate
        assert_eq!(send_all(&mut b), vec![3, 4, 5, 6]);
        for seq in 3..=6 {
            assert!(b.ack(seq));
        }
        assert_eq!(b.append(&frame(7, 64)).unwrap().seq, 7);
        drop(b);
        let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((b.len(), b.next_seq()), (1, 8));
    }

    #[test]
    fn reopen_after_a_torn_append_cuts_the_partial_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
            for seq in 1..=3 {
                b.append(&frame(seq, 80)).unwrap();
            }
        }
        let path = dir.path().join(SEGMENT_FILE);
        let good_len = fs::metadata(&path).unwrap().len();
        // a crash in the middle of the fourth append: header and half the frame written
        let mut torn = Vec::new();
        torn.extend_from_slice(&80u32.to_le_bytes());
        torn.extend_from_slice(&record_crc(4, &frame(4, 80)).to_le_bytes());
        torn.extend_from_slice(&4u64.to_le_bytes());
        torn.extend_from_slice(&frame(4, 80)[..37]);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&torn)
            .unwrap();

        let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(
            b.next_seq(),
            4,
            "the torn frame was never published: its seq is reused"
        );
        b.begin_session();
        assert_eq!(send_all(&mut b), vec![1, 2, 3]);
        // appending after the cut works and survives another restart
        b.append(&frame(4, 80)).unwrap();
        drop(b);
        let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        b.begin_session();
        assert_eq!(send_all(&mut b), vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_flipped_bit_ends_the_valid_records_there() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
            for seq in 1..=3 {
                b.append(&frame(seq, 50)).unwrap();
            }
        }
        let path = dir.path().join(SEGMENT_FILE);
        let mut raw = fs::read(&path).unwrap();
        // inside the frame of the third record
        let third =
            (SEGMENT_HEADER_LEN + 2 * (RECORD_HEADER_LEN + 50) + RECORD_HEADER_LEN) as usize;
        raw[third + 20] ^= 0x40;
        fs::write(&path, raw).unwrap();
        let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        b.begin_session();
        assert_eq!(send_all(&mut b), vec![1, 2]);
    }

    #[test]
    fn fully_acked_segment_is_compacted_and_keeps_the_seq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEGMENT_FILE);
        let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        b.begin_session();
        // 1000-byte frames: 66 of them pass the 64 KiB compaction threshold
        for seq in 1..=70 {
            b.append(&frame(seq, 1000)).unwrap();
            send_all(&mut b);
            assert!(b.ack(seq));
        }
        let len = fs::metadata(&path).unwrap().len();
        assert!(
            len < COMPACT_MIN_BYTES / 2,
            "segment of {len} bytes was not compacted"
        );
        assert!(b.is_empty());
        drop(b);
        let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((b.len(), b.next_seq()), (0, 71));
    }

    #[test]
    fn overflow_on_disk_compacts_and_restores_only_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEGMENT_FILE);
        let cap = 10 * (RECORD_HEADER_LEN + 1000);
        let (mut b, _) = Buffer::open(dir.path(), cap).unwrap();
        let mut dropped = 0;
        for seq in 1..=300 {
            dropped += b.append(&frame(seq, 1000)).unwrap().dropped;
        }
        assert_eq!((dropped, b.len()), (290, 10));
        let len = fs::metadata(&path).unwrap().len();
        assert!(
            len <= SEGMENT_HEADER_LEN + COMPACT_MIN_BYTES + 2 * cap,
            "segment grew to {len} bytes with a cap of {cap}"
        );
        drop(b);
        let (mut b, dropped) = Buffer::open(dir.path(), cap).unwrap();
        assert_eq!(dropped, 0);
        b.begin_session();
        assert_eq!(send_all(&mut b), (291..=300).collect::<Vec<_>>());
        // a smaller cap on restart drops the oldest restored frames
        drop(b);
        let (b, dropped) = Buffer::open(dir.path(), 4 * (RECORD_HEADER_LEN + 1000)).unwrap();
        assert_eq!((dropped, b.len(), b.next_seq()), (6, 4, 301));
    }

    #[test]
    fn a_foreign_segment_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SEGMENT_FILE), b"hello, this is not ours").unwrap();
        let err = Buffer::open(dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(err, BufferError::Corrupt { .. }));
        assert!(err.to_string().contains(SEGMENT_FILE), "{err}");
    }

    #[test]
    fn a_damaged_watermark_replays_rather_than_loses() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
            for seq in 1..=3 {
                b.append(&frame(seq, 30)).unwrap();
            }
            assert!(b.ack(1) && b.ack(2));
        }
        fs::write(dir.path().join(ACK_FILE), b"garbage!garbage!").unwrap();
        let (mut b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.next_seq(), 4);
        b.begin_session();
        assert_eq!(send_all(&mut b), vec![1, 2, 3]);
    }
}
