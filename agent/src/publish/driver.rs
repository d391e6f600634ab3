//! The connection task: polls rumqttc's event loop, maps acknowledgements back to buffered
//! frames, checks incoming commands, reconnects with back-off and runs the clean shutdown.

use std::fmt::Display;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet};
use tokio::sync::mpsc;
use yunjian_protocol::{Body, Command};

use super::backoff::Backoff;
use super::commands::{self, CommandBook, Verdict};
use super::state::{now_ms, LogLimiter, Shared};

/// How long a clean shutdown waits for the DISCONNECT to be written.
const DISCONNECT_WAIT: Duration = Duration::from_millis(500);

pub(crate) struct Driver {
    shared: Arc<Shared>,
    /// To build a new client and event loop after a broken connection.
    options: MqttOptions,
    eventloop: EventLoop,
    backoff: Backoff,
    commands: mpsc::Sender<Command>,
    book: Arc<Mutex<CommandBook>>,
    /// The current run of failed connection attempts, if any.
    outage: Option<Outage>,
    connected_before: bool,
    reject_log: LogLimiter,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Done,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        options: MqttOptions,
        eventloop: EventLoop,
        backoff: Backoff,
        commands: mpsc::Sender<Command>,
        book: Arc<Mutex<CommandBook>>,
    ) -> Driver {
        Driver {
            shared,
            options,
            eventloop,
            backoff,
            commands,
            book,
            outage: None,
            connected_before: false,
            reject_log: LogLimiter::default(),
        }
    }

    /// Run until shutdown (or until aborted by `kill`).
    ///
    /// While connected, `poll()` is not raced against other futures: cancelling it in the
    /// middle of a write would corrupt the MQTT stream. Shutdown wakes it by queueing the
    /// Offline publish instead; the stop signal interrupts it only while not connected
    /// (connecting or backing off: nothing half-written). The one exception is the end of the
    /// shutdown grace period, after which the connection is closed anyway.
    pub(crate) async fn run(mut self) {
        loop {
            let (connected, deadline) = {
                let core = self.shared.core();
                (core.connected, core.stop_deadline)
            };
            let polled = match (connected, deadline) {
                (true, None) => self.eventloop.poll().await,
                (true, Some(deadline)) => {
                    match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                        Ok(polled) => polled,
                        Err(_) => {
                            tracing::debug!("shutdown grace period over");
                            break;
                        }
                    }
                }
                (false, Some(_)) => break,
                (false, None) => tokio::select! {
                    polled = self.eventloop.poll() => polled,
                    () = self.shared.stop.notified() => continue,
                },
            };
            match polled {
                Ok(event) => {
                    if self.on_event(event) == Flow::Done {
                        break;
                    }
                }
                Err(error) => {
                    self.on_connection_error(&error);
                    let delay = self.backoff.next_delay();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shared.stop.notified() => {}
                    }
                }
            }
        }
        self.finish().await;
    }

    fn on_event(&mut self, event: Event) -> Flow {
        let ctx = &self.shared.ctx;
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self.on_connack(),
            Event::Incoming(Packet::PubAck(ack)) => self.shared.core().on_puback(ctx, ack.pkid),
            Event::Incoming(Packet::Publish(publish)) => {
                self.on_command(&publish.topic, &publish.payload)
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.shared.core().on_outgoing_publish(pkid)
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => self.shared.core().on_collision(pkid),
            Event::Outgoing(Outgoing::Disconnect) => return Flow::Done,
            _ => {}
        }
        if self.shared.core().drained() {
            Flow::Done
        } else {
            Flow::Continue
        }
    }

    fn on_connack(&mut self) {
        self.backoff.reset();
        let ctx = &self.shared.ctx;
        match self.outage.take() {
            Some(outage) => tracing::info!(
                failed_attempts = outage.failures,
                outage_s = outage.since.elapsed().as_secs(),
                "connected to the MQTT broker again"
            ),
            None => tracing::info!(broker = %ctx.broker, "connected to the MQTT broker"),
        }
        let mut core = self.shared.core();
        if std::mem::replace(&mut self.connected_before, true) {
            core.stats.reconnects += 1;
        }
        core.on_connack(ctx);
    }

    /// Logged at warn level once per outage; the retries that follow only at debug level.
    fn on_connection_error(&mut self, error: &ConnectionError) {
        let was_connected = {
            let mut core = self.shared.core();
            let was = core.connected;
            core.on_disconnect();
            if was {
                // A fresh rumqttc client and event loop for the next connection. The old one
                // goes with everything it kept for the lost connection: requests still in its
                // channel, copies of unacknowledged publishes (it would resend them under
                // packet ids we cannot map, and they die with the process anyway), acks read
                // but not yet handed out, a held-back publish, and its per-connection tables
                // (rumqttc 0.24 writes a 256 KiB one when a connection breaks; dropping it lets
                // the allocator reclaim that). Every frame not acknowledged is still in our
                // buffer and is replayed, in order, after the next ConnAck.
                // The next connection gets a new stamp, and its last will carries it: the
                // lost connection's will (published now by the broker) stays the older one.
                core.conn_stamp = super::state::next_conn_stamp(core.conn_stamp);
                let ctx = &self.shared.ctx;
                match super::state::last_will(&ctx.id, &ctx.topics.status, core.conn_stamp) {
                    Ok(will) => {
                        self.options.set_last_will(will);
                    }
                    Err(error) => tracing::warn!(%error, "could not encode the last will"),
                }
                let (client, eventloop) =
                    AsyncClient::new(self.options.clone(), super::REQUEST_CHANNEL);
                core.client = client;
                self.eventloop = eventloop;
            }
            was
        };
        let broker = &self.shared.ctx.broker;
        match &mut self.outage {
            Some(outage) => {
                outage.failures += 1;
                tracing::debug!(%error, failures = outage.failures, "MQTT broker still unreachable");
            }
            None => {
                if was_connected {
                    tracing::warn!(%broker, %error, "lost the connection to the MQTT broker; buffering and retrying");
                } else {
                    tracing::warn!(%broker, %error, "cannot connect to the MQTT broker; buffering and retrying");
                }
                self.outage = Some(Outage {
                    since: Instant::now(),
                    failures: 1,
                });
            }
        }
    }

    fn on_command(&mut self, topic: &str, payload: &[u8]) {
        let ctx = &self.shared.ctx;
        if topic != ctx.topics.command {
            tracing::debug!(topic, "ignoring a message on a topic not subscribed to");
            return;
        }
        // held across the hand-over, so a result cannot be journaled before its id is seen
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let command = match book.check(payload, &ctx.id.node, &ctx.id.key, now_ms()) {
            Ok(Verdict::Fresh(command)) => command,
            Ok(Verdict::Answered(result)) => {
                drop(book);
                tracing::info!(
                    id = %commands::hex(&result.id),
                    "command replayed: its recorded result is sent again, nothing is executed"
                );
                let mut core = self.shared.core();
                if !core.closed {
                    core.enqueue_logged(ctx, Body::CommandResult(result), false);
                    core.feed(ctx);
                }
                return;
            }
            Err(rejected) => {
                drop(book);
                return self.reject(rejected);
            }
        };
        let id = command.id;
        match self.commands.try_send(command) {
            Ok(()) => book.accepted(id),
            Err(mpsc::error::TrySendError::Full(_)) => {
                drop(book);
                self.reject("the agent's command queue is full")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                drop(book);
                self.reject("nobody receives commands in this process")
            }
        }
    }

    fn reject(&mut self, reason: impl Display) {
        self.shared.core().stats.commands_rejected += 1;
        if let Some(suppressed) = self.reject_log.allow() {
            tracing::warn!(%reason, suppressed, "command rejected");
        }
    }

    /// Disconnect cleanly if still connected (the broker then discards the last will; the
    /// retained Offline status was already published) and make the buffer's state durable.
    async fn finish(&mut self) {
        let disconnect_queued = {
            let mut core = self.shared.core();
            let was_connected = core.connected;
            // nothing more is fed after the DISCONNECT; acknowledgements still count
            core.connected = false;
            was_connected && core.client.try_disconnect().is_ok()
        };
        if disconnect_queued {
            let flushed = tokio::time::timeout(DISCONNECT_WAIT, async {
                loop {
                    match self.eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        Ok(event) => {
                            self.on_event(event);
                        }
                    }
                }
            })
            .await;
            if flushed.is_err() {
                tracing::debug!("DISCONNECT not written in time; closing the connection");
            }
        }
        let mut core = self.shared.core();
        core.on_disconnect();
        core.closed = true;
        if let Err(error) = core.buffer.sync() {
            tracing::warn!(%error, "could not sync the report buffer at shutdown");
        }
        tracing::info!(buffered = core.buffer.len(), "publisher stopped");
    }
}
