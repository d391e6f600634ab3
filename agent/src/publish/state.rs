//! State shared by the [`Publisher`](super::Publisher) handles and the connection task.
//!
//! Everything that hands a request to rumqttc does so under the [`Core`] lock, so the order of
//! the request channel is the order of [`Core::handed`]; that is how a PubAck's packet id is
//! mapped back to a seq (see [`Core::on_outgoing_publish`]).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::Notify;
use yunjian_protocol::{
    encode, topics, Body, Envelope, Event, FrameError, Hello, Inventory, Severity, Status,
};

use super::buffer::{Buffer, BufferError};
use super::{Identity, PublishError, PublisherStats};

/// Report frames handed to rumqttc and not acknowledged yet, at most. Bounds what rumqttc
/// holds; everything else waits in the [`Buffer`].
pub(crate) const WINDOW: usize = 16;

#[derive(Debug)]
pub(crate) struct Topics {
    pub report: String,
    pub status: String,
    pub command: String,
}

/// What does not change over the publisher's life.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub id: Identity,
    pub topics: Topics,
    /// `host:port`, for log lines and errors.
    pub broker: String,
    /// The buffer's size cap, for the `buffer.dropped` event text.
    pub max_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub ctx: Ctx,
    pub core: Mutex<Core>,
    /// Wakes the connection task when it is not connected (connect attempt or back-off sleep)
    /// and shutdown begins. While connected, the Offline publish wakes it instead.
    pub stop: Notify,
}

impl Shared {
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a publish handed to rumqttc stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    Frame(u64),
    Status(Status),
}

#[derive(Debug)]
pub(crate) struct Core {
    pub client: AsyncClient,
    pub buffer: Buffer,
    pub inventory: Option<Inventory>,
    /// Between a ConnAck and the next connection error.
    pub connected: bool,
    /// No more sends accepted (shut down or killed).
    pub closed: bool,
    /// Shutdown in progress: give up waiting for acknowledgements at this instant.
    pub stop_deadline: Option<tokio::time::Instant>,
    pub offline_acked: bool,
    /// The connection stamp of the current (or next) connection: its last will and its
    /// statuses carry it (see [`yunjian_protocol::Status`]).
    pub conn_stamp: u64,
    /// Requests in the rumqttc channel, in channel order, not yet given a packet id.
    handed: VecDeque<Tag>,
    /// Published and waiting for PubAck, by packet id.
    inflight: Vec<(u16, Tag)>,
    /// A publish rumqttc holds back because its packet id is still in use.
    collided: Option<(u16, Tag)>,
    /// Frames dropped by the size cap and not reported to the aggregator yet.
    pending_dropped: u64,
    pub stats: PublisherStats,
    buffer_log: LogLimiter,
}

impl Core {
    pub(crate) fn new(
        client: AsyncClient,
        buffer: Buffer,
        dropped_on_open: u64,
        conn_stamp: u64,
    ) -> Core {
        Core {
            client,
            buffer,
            inventory: None,
            connected: false,
            closed: false,
            stop_deadline: None,
            offline_acked: false,
            conn_stamp,
            handed: VecDeque::new(),
            inflight: Vec::new(),
            collided: None,
            pending_dropped: dropped_on_open,
            stats: PublisherStats {
                dropped_overflow: dropped_on_open,
                ..PublisherStats::default()
            },
            buffer_log: LogLimiter::default(),
        }
    }

    pub(crate) fn snapshot(&self) -> PublisherStats {
        PublisherStats {
            buffered: self.buffer.len() as u64,
            connected: self.connected,
            ..self.stats
        }
    }

    /// Give `body` the next seq, sign it and append it to the buffer. With `first`, hand it to
    /// MQTT at once, ahead of the frames waiting in the buffer (the per-connection preamble);
    /// otherwise it goes out in buffer order through [`Core::feed`].
    pub(crate) fn enqueue(
        &mut self,
        ctx: &Ctx,
        ts_ms: u64,
        body: Body,
        first: bool,
    ) -> Result<u64, PublishError> {
        let kind = body.kind();
        let seq = self.buffer.next_seq();
        let envelope = Envelope::new(ctx.id.node.clone(), seq, ts_ms, body);
        let frame = encode(&envelope, &ctx.id.key)
            .map_err(|source| PublishError::Encode { kind, source })?;
        let appended = self.buffer.append(&frame)?;
        self.stats.sent += 1;
        if appended.dropped > 0 {
            self.stats.dropped_overflow += appended.dropped;
            self.pending_dropped += appended.dropped;
        }
        if first && self.connected && self.hand(&ctx.topics.report, false, frame, Tag::Frame(seq)) {
            self.buffer.mark_sent(seq);
        }
        Ok(seq)
    }

    /// [`Core::enqueue`] for messages the agent emits on its own: a failure is logged, there
    /// is no caller to return it to.
    pub(crate) fn enqueue_logged(&mut self, ctx: &Ctx, body: Body, first: bool) {
        let kind = body.kind();
        if let Err(error) = self.enqueue(ctx, now_ms(), body, first) {
            if let Some(suppressed) = self.buffer_log.allow() {
                tracing::warn!(%error, kind, suppressed, "could not queue a message");
            }
        }
    }

    /// Hand waiting frames to MQTT, oldest first, while the window has room.
    pub(crate) fn feed(&mut self, ctx: &Ctx) {
        if !self.connected {
            return;
        }
        while self.handed.len() + self.inflight.len() + usize::from(self.collided.is_some())
            < WINDOW
        {
            let next = match self.buffer.peek_unsent() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(error) => {
                    self.log_buffer_error(&error);
                    break;
                }
            };
            if !self.hand(&ctx.topics.report, false, next.frame, Tag::Frame(next.seq)) {
                break;
            }
            self.buffer.mark_sent(next.seq);
            if next.replay {
                self.stats.replayed += 1;
            }
        }
    }

    /// Queue one QoS 1 publish in rumqttc's request channel. The channel is sized so that this
    /// only fails when the connection task is gone; the frame then simply stays buffered.
    fn hand(&mut self, topic: &str, retain: bool, payload: Vec<u8>, tag: Tag) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.handed.push_back(tag);
                true
            }
            Err(error) => {
                tracing::debug!(%error, "MQTT request channel refused a publish; it stays buffered");
                false
            }
        }
    }

    /// A new connection: status, subscription, preamble (Hello, Inventory, dropped-frames
    /// event), then the buffer in order.
    pub(crate) fn on_connack(&mut self, ctx: &Ctx) {
        self.connected = true;
        self.buffer.begin_session();
        self.handed.clear();
        self.inflight.clear();
        self.collided = None;
        self.offline_acked = false;
        self.hand_status(ctx, Status::Online);
        if let Err(error) = self
            .client
            .try_subscribe(ctx.topics.command.as_str(), QoS::AtLeastOnce)
        {
            tracing::warn!(%error, "could not subscribe to the command topic");
        }
        let hello = Hello {
            agent_version: ctx.id.agent_version.clone(),
            role: ctx.id.role,
            interval_ms: ctx.id.interval_ms,
            buffered: u32::try_from(self.buffer.len()).unwrap_or(u32::MAX),
            epoch: self.buffer.epoch(),
        };
        self.enqueue_logged(ctx, Body::Hello(hello), true);
        if let Some(inventory) = self.inventory.clone() {
            self.enqueue_logged(ctx, Body::Inventory(inventory), true);
        }
        if self.pending_dropped > 0 {
            let count = std::mem::take(&mut self.pending_dropped);
            let event = Event {
                severity: Severity::Warning,
                code: "buffer.dropped".into(),
                message: format!(
                    "{count} oldest buffered messages were dropped: the buffer reached its cap of {} bytes while the broker was unreachable",
                    ctx.max_bytes
                ),
            };
            self.enqueue_logged(ctx, Body::Event(event), true);
        }
        if self.stop_deadline.is_some() {
            self.hand_status(ctx, Status::Offline);
        }
        self.feed(ctx);
    }

    /// Publish the retained status (outside the report stream, with the connection stamp).
    pub(crate) fn hand_status(&mut self, ctx: &Ctx, status: Status) {
        match status_frame(&ctx.id, status, self.conn_stamp) {
            Ok(frame) => {
                self.hand(&ctx.topics.status, true, frame, Tag::Status(status));
            }
            Err(error) => tracing::warn!(%error, "could not encode the status message"),
        }
    }

    /// The connection is gone: whatever was handed to rumqttc and not acknowledged is replayed
    /// from the buffer after the next ConnAck.
    pub(crate) fn on_disconnect(&mut self) {
        self.connected = false;
        self.handed.clear();
        self.inflight.clear();
        self.collided = None;
    }

    /// rumqttc wrote the next request of its channel to the network under `pkid`.
    pub(crate) fn on_outgoing_publish(&mut self, pkid: u16) {
        if let Some((held, tag)) = self.collided {
            if held == pkid {
                self.collided = None;
                self.inflight.push((pkid, tag));
                return;
            }
        }
        match self.handed.pop_front() {
            Some(tag) => self.inflight.push((pkid, tag)),
            None => tracing::debug!(pkid, "publish by rumqttc that was not handed over here"),
        }
    }

    /// rumqttc holds the next request back until `pkid` is acknowledged.
    pub(crate) fn on_collision(&mut self, pkid: u16) {
        if let Some(tag) = self.handed.pop_front() {
            self.collided = Some((pkid, tag));
        }
    }

    pub(crate) fn on_puback(&mut self, ctx: &Ctx, pkid: u16) {
        let Some(i) = self.inflight.iter().position(|(p, _)| *p == pkid) else {
            return;
        };
        match self.inflight.swap_remove(i).1 {
            Tag::Frame(seq) => {
                if self.buffer.ack(seq) {
                    self.stats.acked += 1;
                }
            }
            Tag::Status(Status::Offline) => self.offline_acked = true,
            Tag::Status(Status::Online) => {}
        }
        self.feed(ctx);
    }

    /// Shutdown may finish: the Offline status and every buffered frame are acknowledged.
    pub(crate) fn drained(&self) -> bool {
        self.stop_deadline.is_some() && self.offline_acked && self.buffer.is_empty()
    }

    fn log_buffer_error(&mut self, error: &BufferError) {
        if let Some(suppressed) = self.buffer_log.allow() {
            tracing::warn!(%error, suppressed, "cannot read from the report buffer");
        }
    }
}

/// A status frame of the connection stamped `conn_stamp` (its `seq`).
pub(crate) fn status_frame(
    id: &Identity,
    status: Status,
    conn_stamp: u64,
) -> Result<Vec<u8>, FrameError> {
    let envelope = Envelope::new(id.node.clone(), conn_stamp, now_ms(), Body::Status(status));
    encode(&envelope, &id.key)
}

/// The stamp of a new connection: the wall clock in ms, and always above the previous one
/// (a clock stepped back must not make a new connection's statuses look stale).
pub(crate) fn next_conn_stamp(previous: u64) -> u64 {
    now_ms().max(previous.saturating_add(1))
}

/// The last will of a connection stamped `conn_stamp`: its retained `Offline`.
pub(crate) fn last_will(
    id: &Identity,
    topic: &str,
    conn_stamp: u64,
) -> Result<rumqttc::LastWill, FrameError> {
    let will = status_frame(id, Status::Offline, conn_stamp)?;
    Ok(rumqttc::LastWill::new(
        topic,
        will,
        rumqttc::QoS::AtLeastOnce,
        true,
    ))
}

pub(crate) fn topics_for(node: &str) -> Topics {
    Topics {
        report: topics::report(node),
        status: topics::status(node),
        command: topics::command(node),
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// At most one log line per minute for a repeating problem, with the count of the ones left out.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    const EVERY: Duration = Duration::from_secs(60);

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Self::EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_lets_one_line_through_per_period() {
        let mut limiter = LogLimiter::default();
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        limiter.last = Some(Instant::now() - LogLimiter::EVERY);
        assert_eq!(limiter.allow(), Some(2));
    }
}
