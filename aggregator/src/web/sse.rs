//! `/api/events`: the fleet as Server-Sent Events for the dashboard.
//!
//! One `nodes` event (the `/api/nodes` body, as the user who connected may see it) on connect,
//! then one whenever ingest bumps the change counter, at most one per [`MIN_GAP`]: a burst of
//! batches is coalesced into the next frame. The stream ends when the server shuts down or
//! ingest drops its sender.

use super::api::{snapshot, NodeFilter};
use super::scope::Scope;
use super::session::Principal;
use super::{AppState, Closing};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::time::Duration;
use tokio::time::Instant;

/// Minimum time between two `nodes` events on one connection.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// Comment lines keep idle connections open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Per-connection state of the event stream.
struct Feed {
    app: AppState,
    closing: Closing,
    /// The unit whose VMs alone the frames show (`None`: the cloud's people, everything).
    unit: Option<String>,
    last_sent: Option<Instant>,
}

pub async fn events(
    State(app): State<AppState>,
    State(closing): State<Closing>,
    who: Principal,
) -> Sse<impl Stream<Item = Result<Event, axum::Error>>> {
    let feed = Feed {
        app,
        closing,
        unit: who.own_unit().map(str::to_string),
        last_sent: None,
    };
    Sse::new(stream::unfold(feed, next_event))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

async fn next_event(mut feed: Feed) -> Option<(Result<Event, axum::Error>, Feed)> {
    if let Some(last) = feed.last_sent {
        tokio::select! {
            changed = feed.app.changes.changed() => changed.ok()?,
            () = feed.closing.closed() => return None,
        }
        tokio::select! {
            () = tokio::time::sleep_until(last + MIN_GAP) => {}
            () = feed.closing.closed() => return None,
        }
    }
    // Seen before the snapshot: a change racing with it wakes the next round.
    feed.app.changes.mark_unchanged();
    // the register may have changed since the last frame: which VMs are the unit's, anew
    let scope = {
        let register = feed.app.register.read().unwrap_or_else(|p| p.into_inner());
        Scope::of(feed.unit.as_deref(), &register)
    };
    let body = snapshot(&feed.app.fleet, &scope, &NodeFilter::default());
    feed.last_sent = Some(Instant::now());
    let event = Event::default().event("nodes").json_data(&body);
    Some((event, feed))
}
