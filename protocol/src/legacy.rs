//! Older wire versions, still read (rule 3 of the crate docs): each is decoded with its own
//! types and converted into today's [`Envelope`], so the rest of the system sees one shape.
//!
//! Version 1 differs from version 2 in [`Hello`](crate::Hello) only (no `epoch`); every other
//! body is shared, so the version-1 types name the current ones except for the hello.

use crate::body::{AntivirusReport, Event, GuestView, Inventory, Report, Role, Status};
use crate::command::{Command, CommandResult};
use crate::hardware::HardwareReport;
use serde::Deserialize;

/// The envelope of protocol version 1.
#[derive(Debug, Deserialize)]
pub struct EnvelopeV1 {
    pub version: u8,
    pub node: String,
    pub seq: u64,
    pub ts_ms: u64,
    pub body: BodyV1,
}

/// [`crate::Body`] of version 1: the same variants, in the same order.
#[derive(Debug, Deserialize)]
pub enum BodyV1 {
    Hello(HelloV1),
    Inventory(Inventory),
    Report(Report),
    Event(Event),
    Command(Command),
    CommandResult(CommandResult),
    Status(Status),
    Guests(Vec<GuestView>),
    Antivirus(AntivirusReport),
    Hardware(HardwareReport),
}

/// [`crate::Hello`] of version 1: no epoch.
#[derive(Debug, Deserialize)]
pub struct HelloV1 {
    pub agent_version: String,
    pub role: Role,
    pub interval_ms: u32,
    pub buffered: u32,
}

impl From<EnvelopeV1> for crate::Envelope {
    fn from(e: EnvelopeV1) -> Self {
        use crate::Body;
        let body = match e.body {
            BodyV1::Hello(h) => Body::Hello(crate::Hello {
                agent_version: h.agent_version,
                role: h.role,
                interval_ms: h.interval_ms,
                buffered: h.buffered,
                epoch: 0,
            }),
            BodyV1::Inventory(b) => Body::Inventory(b),
            BodyV1::Report(b) => Body::Report(b),
            BodyV1::Event(b) => Body::Event(b),
            BodyV1::Command(b) => Body::Command(b),
            BodyV1::CommandResult(b) => Body::CommandResult(b),
            BodyV1::Status(b) => Body::Status(b),
            BodyV1::Guests(b) => Body::Guests(b),
            BodyV1::Antivirus(b) => Body::Antivirus(b),
            BodyV1::Hardware(b) => Body::Hardware(b),
        };
        crate::Envelope {
            version: e.version,
            node: e.node,
            seq: e.seq,
            ts_ms: e.ts_ms,
            body,
        }
    }
}
