//! The MQTT publisher: signs the agent's messages, keeps them until the broker has them, and
//! receives the aggregator's commands. Used by the agent binary (one publisher) and by the
//! simulator (up to 10,000 in one process).
//!
//! # Connection
//!
//! rumqttc speaking MQTT 3.1.1, client id [`topics::client_id`], **clean session off** (the
//! broker keeps the command subscription and queues commands while the agent is away), QoS 1
//! for everything, keep-alive from [`MqttConfig`]. The last will is a retained
//! `Status::Offline` envelope on [`topics::status`] whose seq is the connection's stamp (the
//! wall-clock ms when the connection was prepared, above every earlier stamp; a new one for
//! each new connection, so a replayed status of an earlier connection is stale: see
//! [`yunjian_protocol::Status`]). On every ConnAck, in this order:
//!
//! 1. retained `Status::Online` (the same stamp) on the status topic;
//! 2. subscribe to [`topics::command`] (QoS 1);
//! 3. `Hello` (its `buffered` = frames waiting at that moment), then the inventory if one was
//!    set, then a `buffer.dropped` event if frames were dropped since the last connection;
//! 4. the buffer, oldest first (replay); then new messages as they are sent.
//!
//! Reconnects use exponential back-off with jitter between `backoff_min_ms` and
//! `backoff_max_ms`, reset after a successful connect. A lost or refused connection is logged
//! once per outage at warn level (broker address and cause); retries only at debug level.
//!
//! # Sequence numbers
//!
//! Every envelope on the report topic (Hello, Inventory, Report, Event, Guests, CommandResult)
//! takes the next number of **one counter per node**, starting at 1. Status envelopes carry
//! the connection stamp instead. The counter counts within an **epoch** (announced in every
//! `Hello`): a random number drawn when the buffer is created and kept with it in
//! `buffer.epoch`. With a buffer directory the counter and its epoch continue across agent
//! restarts; in memory-only mode, or with a wiped or new directory, a new epoch starts at 1.
//! A number is never used twice in one epoch for different content.
//!
//! # Delivery guarantee
//!
//! **At least once**, from `send` returning `Ok(seq)` until the broker acknowledges (PubAck)
//! the frame. The receiver de-duplicates by `(node, seq)`. Specifically:
//!
//! * Each frame is appended to the buffer (and, with a directory, written and `fdatasync`ed)
//!   *before* it is handed to MQTT, and leaves the buffer only on its PubAck. rumqttc's own
//!   retransmission state is not relied upon: after a broken connection it is discarded and
//!   every unacknowledged frame is replayed from the buffer, in seq order.
//! * Duplicates happen (a frame whose PubAck was lost is sent again; acknowledgements are
//!   persisted without fsync, so a power loss can replay acknowledged frames). Arrival order is
//!   not seq order after a reconnect: the new Hello precedes the replay of older seqs, and an
//!   unacknowledged Hello or Inventory of a broken connection is replayed later like any frame.
//!   A receiver should therefore apply Hello and Inventory only if their seq is newer than the
//!   last one applied.
//! * The only intended losses: when the buffer reaches `max_bytes`, the **oldest** frames are
//!   dropped (never the newest), counted in [`PublisherStats::dropped_overflow`] and announced
//!   after the next connect by an `Event` with code `buffer.dropped` whose message starts with
//!   the count; in memory-only mode the buffer dies with the process.
//! * A command is delivered at most once per id (see below).
//!
//! # What is persisted where (only when `BufferConfig::dir` is set)
//!
//! * `buffer.seg`, the segment: a 16-byte header (`b"YJBUF001"`, then the next-seq floor as
//!   u64 LE), followed by one record per frame, oldest first:
//!   `len: u32 LE | crc32: u32 LE | seq: u64 LE | frame: len bytes`, where the CRC-32 (IEEE)
//!   covers the seq bytes and the frame. Appended with `pwrite` + `fdatasync` (one fsync per
//!   message: one every 10 s for an agent). On start the records are scanned; the first
//!   incomplete, damaged or out-of-order record ends the file (a crash during an append leaves
//!   a torn tail that is cut off with a warning, never a start failure).
//! * `buffer.ack`, the watermark: `b"YJAK" | seq: u64 LE | crc32: u32 LE`. Every seq at or
//!   below it is done (acknowledged, or dropped by the cap); rewritten in place after each
//!   acknowledgement, synced at shutdown. Damaged → 0: replay everything, duplicates only.
//! * Compaction: once the dead prefix of the segment (done records) is ≥ 64 KiB and ≥ the live
//!   part, the live records are copied to `buffer.seg.tmp`, synced and renamed over the segment,
//!   with the header's next-seq floor set to the next seq. The segment thus stays below about
//!   `2 × max_bytes + 64 KiB`. The next seq after a restart is the maximum of the floor, the
//!   watermark + 1 and the last record's seq + 1.
//! * `buffer.epoch`: `b"YJEP" | epoch: u64 LE | crc32: u32 LE`, written once when the buffer
//!   is created (via a temporary file, synced). Missing or damaged: a new epoch is drawn (the
//!   numbers continue; the receiver restarts its count only when they go back).
//! * `commands.seen`: the ids (16 bytes each, oldest first) of the last 1024 accepted commands,
//!   rewritten via a temporary file and rename after each accepted command.
//! * `commands.results`: the results journal of the last 1024 commands (see Commands).
//!
//! In directory mode only an index (about 48 bytes a frame) stays in memory and frames are read
//! back from the segment when sent. In memory-only mode (the simulator) the frames themselves
//! are kept, bounded by `max_bytes`.
//!
//! # Commands
//!
//! Frames on the command topic are decoded with the node's key
//! ([`yunjian_protocol::decode`]). A command whose id has a journaled result (see below) is
//! answered with that result again, executing nothing, even after its expiry. Otherwise a bad
//! MAC, another node's envelope, a non-command body, an expired command (`expires_ms` < now)
//! or an id accepted and still being carried out are rejected: counted in
//! [`PublisherStats::commands_rejected`] and logged at most once a minute. An id accepted
//! before an agent restart (among the last 1024) but never answered is answered as failed,
//! outcome unknown, and not run again. The rest are delivered on the receiver returned by
//! [`Publisher::start`] (capacity 16; when it is full or dropped, the command is rejected
//! likewise).
//!
//! [`Publisher::send_result`] journals each result before publishing it: the last 1024, in
//! `commands.results` (one JSON line each, appended with `fdatasync`, compacted via a
//! temporary file and rename) with a buffer directory, in memory otherwise.
//!
//! # Footprint
//!
//! At most 16 report frames are handed to rumqttc at a time (the rest wait in the buffer), its
//! request channel holds 64 requests, its in-flight window is 32, and packets are limited to
//! [`MAX_FRAME_LEN`] + 1 KiB both ways. Disk writes happen inline under a short lock: cheap at
//! one message every few seconds.
//!
//! Measured with 1,000 memory-only publishers in one process (the ignored test
//! `a_thousand_publishers_stay_small` in `tests/publisher.rs`): about 28 KiB resident each,
//! connected and idle. rumqttc 0.24 zeroes a 256 KiB table per client whenever a connection
//! breaks; each broken connection therefore gets a fresh rumqttc client, and the old one is
//! dropped. With glibc's adaptive mmap threshold that memory is reused rather than returned
//! from the second broker restart on (about 300 KiB each then); with
//! `MALLOC_MMAP_THRESHOLD_=131072` it stays about 50-70 KiB each.
//!
//! # Stopping
//!
//! [`Publisher::shutdown`] publishes the retained Offline status, waits up to 2 s for it and
//! the buffer to be acknowledged, disconnects cleanly and syncs the buffer state.
//! [`Publisher::kill`] drops the TCP connection without DISCONNECT, so the broker publishes the
//! last will. Dropping the last handle without either behaves like `kill`.

pub mod config;

mod backoff;
mod buffer;
mod commands;
mod driver;
mod state;

pub use buffer::BufferError;
pub(crate) use commands::hex as command_id_hex;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, TlsConfiguration, Transport};
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;
use yunjian_protocol::{
    topics, Body, Command, CommandResult, FrameError, Inventory, NodeKey, Role, Status,
    MAX_FRAME_LEN,
};

use self::backoff::{seed_for, Backoff};
use self::buffer::Buffer;
use self::commands::CommandBook;
use self::config::{BufferConfig, MqttConfig};
use self::driver::Driver;
use self::state::{last_will, next_conn_stamp, topics_for, Core, Ctx, Shared};

/// rumqttc's request channel: the window, the status publishes, the subscription and the
/// DISCONNECT always fit.
const REQUEST_CHANNEL: usize = 64;
/// rumqttc's in-flight limit (packet ids 1..=32); above the window so it never blocks us.
const MQTT_INFLIGHT: u16 = 32;
/// Largest MQTT packet either way: a maximal frame plus topic and header.
const MAX_PACKET: usize = MAX_FRAME_LEN + 1024;
/// Commands accepted but not yet taken by the agent.
const COMMAND_QUEUE: usize = 16;
/// How long [`Publisher::shutdown`] waits for acknowledgements.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Who is publishing.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The node id (see [`topics::valid_node_id`]).
    pub node: String,
    /// The node's enrolled key: signs every frame and verifies commands.
    pub key: NodeKey,
    pub role: Role,
    /// Reported in `Hello`.
    pub agent_version: String,
    /// The report interval, reported in `Hello`.
    pub interval_ms: u32,
}

/// Counters of one publisher, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PublisherStats {
    /// Envelopes queued for the report topic (each took a seq), the preamble included.
    pub sent: u64,
    /// Frames acknowledged by the broker (frames restored from the disk buffer included).
    pub acked: u64,
    /// Waiting for acknowledgement now (in flight or not sent yet).
    pub buffered: u64,
    /// Oldest frames dropped because the buffer reached `max_bytes`.
    pub dropped_overflow: u64,
    /// Frames handed to MQTT again after a reconnect or restored after a restart.
    pub replayed: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Connected to the broker right now.
    pub connected: bool,
    /// Commands refused (bad MAC, wrong node, expired, replayed, queue full).
    pub commands_rejected: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid node id {0:?}: expected 1 to 64 characters from [A-Za-z0-9._-]")]
    InvalidNode(String),
    #[error("invalid MQTT settings for broker {broker}: {reason}")]
    Config { broker: String, reason: String },
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("could not encode a {kind} envelope: {source}")]
    Encode {
        kind: &'static str,
        #[source]
        source: FrameError,
    },
    #[error("the publisher of node {node} (broker {broker}) is shut down")]
    Closed { node: String, broker: String },
}

/// A handle to one node's publisher. Clones share the connection, buffer and counters.
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Seen command ids and the results journal, shared with the connection task.
    book: Arc<Mutex<CommandBook>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = self.task.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

impl Publisher {
    /// Open the buffer, spawn the connection task and return at once: the broker does not have
    /// to be reachable (messages are buffered until it is). Fails on an invalid node id or
    /// settings, or an unusable buffer directory.
    pub async fn start(
        mqtt: &MqttConfig,
        buffer: &BufferConfig,
        id: Identity,
    ) -> Result<(Publisher, mpsc::Receiver<Command>), PublishError> {
        if !topics::valid_node_id(&id.node) {
            return Err(PublishError::InvalidNode(id.node));
        }
        let broker = format!("{}:{}", mqtt.host, mqtt.port);
        let invalid = |reason: String| PublishError::Config {
            broker: broker.clone(),
            reason,
        };
        if mqtt.host.is_empty() {
            return Err(invalid("mqtt.host is empty".into()));
        }
        if mqtt.backoff_min_ms == 0 || mqtt.backoff_min_ms > mqtt.backoff_max_ms {
            return Err(invalid(format!(
                "need 0 < mqtt.backoff_min_ms ({}) <= mqtt.backoff_max_ms ({})",
                mqtt.backoff_min_ms, mqtt.backoff_max_ms
            )));
        }
        if mqtt.keep_alive_s > u64::from(u16::MAX) {
            return Err(invalid(format!(
                "mqtt.keep_alive_s ({}) exceeds MQTT's limit of 65535 s",
                mqtt.keep_alive_s
            )));
        }
        // read now: a missing or bad CA file stops the start, naming the file
        let tls = match (&mqtt.tls_ca, &mqtt.tls_server_name) {
            (Some(ca), name) => Some(
                yunjian_tls::client_config(ca, name.as_deref())
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            (None, Some(_)) => {
                return Err(invalid(
                    "mqtt.tls_server_name is set without mqtt.tls_ca".into(),
                ))
            }
            (None, None) => None,
        };

        let (buf, dropped_on_open) = match &buffer.dir {
            Some(dir) => Buffer::open(dir, buffer.max_bytes)?,
            None => (Buffer::memory(buffer.max_bytes), 0),
        };
        let book = Arc::new(Mutex::new(CommandBook::load(buffer.dir.as_deref())?));
        let conn_stamp = next_conn_stamp(0);
        let will = last_will(&id, &topics::status(&id.node), conn_stamp).map_err(|source| {
            PublishError::Encode {
                kind: "status",
                source,
            }
        })?;

        let mut options = MqttOptions::new(topics::client_id(&id.node), &mqtt.host, mqtt.port);
        options
            .set_keep_alive(Duration::from_secs(mqtt.keep_alive_s))
            .set_clean_session(false)
            // the embedded broker checks this login; other brokers may ignore it
            .set_credentials(id.node.clone(), id.key.mqtt_password())
            .set_inflight(MQTT_INFLIGHT)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(will);
        if let Some(tls) = tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        let (client, eventloop) = AsyncClient::new(options.clone(), REQUEST_CHANNEL);

        let span = tracing::info_span!("publisher", node = %id.node, broker = %broker);
        let backoff = Backoff::new(mqtt.backoff_min_ms, mqtt.backoff_max_ms, seed_for(&id.node));
        let shared = Arc::new(Shared {
            ctx: Ctx {
                topics: topics_for(&id.node),
                id,
                broker,
                max_bytes: buffer.max_bytes,
            },
            core: Mutex::new(Core::new(client, buf, dropped_on_open, conn_stamp)),
            stop: Notify::new(),
        });
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let driver = Driver::new(
            Arc::clone(&shared),
            options,
            eventloop,
            backoff,
            commands_tx,
            Arc::clone(&book),
        );
        let task = tokio::spawn(driver.run().instrument(span));
        let publisher = Publisher {
            inner: Arc::new(Inner {
                shared,
                task: Mutex::new(Some(task)),
                book,
            }),
        };
        Ok((publisher, commands_rx))
    }

    /// Set the node's inventory: sent now (when connected) and after `Hello` on every
    /// (re)connect.
    pub async fn set_inventory(&self, inv: Inventory) {
        let shared = &self.inner.shared;
        let mut core = shared.core();
        core.inventory = Some(inv.clone());
        if core.connected && !core.closed {
            core.enqueue_logged(&shared.ctx, Body::Inventory(inv), false);
            core.feed(&shared.ctx);
        }
    }

    /// Sign `body` with the next seq, buffer it (durably, with a directory) and publish it as
    /// soon as the connection allows. Returns the seq. `ts_ms` is the event time.
    pub async fn send(&self, ts_ms: u64, body: Body) -> Result<u64, PublishError> {
        let shared = &self.inner.shared;
        let mut core = shared.core();
        if core.closed {
            return Err(PublishError::Closed {
                node: shared.ctx.id.node.clone(),
                broker: shared.ctx.broker.clone(),
            });
        }
        let seq = core.enqueue(&shared.ctx, ts_ms, body, false)?;
        core.feed(&shared.ctx);
        Ok(seq)
    }

    /// Send the result of a command (on the report topic, like every upstream message).
    /// The result is journaled (and synced, with a buffer directory) first, so a replay of the
    /// command gets it again instead of a second execution; a message longer than 2 KiB is
    /// cut. A failure to journal or to queue it is logged.
    pub async fn send_result(&self, r: CommandResult) {
        let r = self
            .inner
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(r);
        let shared = &self.inner.shared;
        let mut core = shared.core();
        if core.closed {
            tracing::warn!("command result not sent: the publisher is shut down");
            return;
        }
        core.enqueue_logged(&shared.ctx, Body::CommandResult(r), false);
        core.feed(&shared.ctx);
    }

    pub fn stats(&self) -> PublisherStats {
        self.inner.shared.core().snapshot()
    }

    /// Publish the retained Offline status, wait up to 2 s for it and the buffered frames to
    /// be acknowledged, disconnect cleanly and sync the buffer. Not connected: stop at once
    /// (the buffer is already on disk, or is lost in memory-only mode). Other clones of this
    /// handle get [`PublishError::Closed`] afterwards.
    pub async fn shutdown(self) {
        let shared = &self.inner.shared;
        let task = self.take_task();
        {
            let mut core = shared.core();
            core.closed = true;
            if core.stop_deadline.is_none() {
                core.stop_deadline = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                if core.connected {
                    core.hand_status(&shared.ctx, Status::Offline);
                }
            }
        }
        shared.stop.notify_one();
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::warn!(%error, "publisher task ended abnormally");
            }
        }
    }

    /// Drop the connection abruptly, without DISCONNECT, so the broker publishes the last will
    /// (retained Offline). For tests and the simulator; the buffer is kept as it is.
    pub async fn kill(self) {
        let task = self.take_task();
        self.inner.shared.core().closed = true;
        if let Some(task) = task {
            task.abort();
            // wait until the task, and with it the socket, is gone
            let _ = task.await;
        }
        self.inner.shared.core().on_disconnect();
    }

    fn take_task(&self) -> Option<JoinHandle<()>> {
        self.inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
