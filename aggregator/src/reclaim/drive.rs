//! The reclaim task: results from agents as they come, and every `[reclaim] tick` the drive
//! of due steps, the notice to each unit whose answer is awaited (rule `reclaim_notice`) and
//! the escalation of overdue cases (rule `reclaim_overdue`) and the deadlines counted in a year
//! no holiday calendar covers (rule `calendar_year_missing`), all through the alarm book:
//! stored, audited, sent as notices grouped per unit.

use super::service::{Reclaim, CALENDAR_RULE, NOTICE_RULE, OVERDUE_RULE};
use super::{CommandReply, Detection};
use crate::policy::SharedPolicy;
use crate::ratelimit::now_ms;
use crate::service::AlarmSink;
use std::collections::HashSet;
use tokio::sync::{mpsc, watch};

/// What the task writes to besides the cases.
#[derive(Debug)]
pub struct Parts {
    pub policy: SharedPolicy,
    /// Where the notice and overdue alarms go (stored, audited, notified).
    pub alarms: AlarmSink,
    pub changes: watch::Sender<u64>,
    /// The utilisation history whose idle / over-provisioned findings open cases.
    pub usage: Option<crate::usage::SharedUsage>,
    pub profile: std::sync::Arc<crate::policy::Profile>,
}

pub async fn run(
    reclaim: Reclaim,
    mut results: mpsc::UnboundedReceiver<CommandReply>,
    p: Parts,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(reclaim.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut results_open = true;
    let mut next_detect = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = results.recv(), if results_open => {
                match r {
                    Some(reply) => {
                        reclaim.on_reply(reply, now_ms()).await;
                        p.changes.send_modify(|v| *v += 1);
                    }
                    None => results_open = false,
                }
                continue;
            }
            _ = stop.changed() => return,
        }
        let now = now_ms();
        if let (Some(usage), true) = (&p.usage, now >= next_detect) {
            next_detect = now + reclaim.config.detect_every.as_millis() as u64;
            let found: Vec<Detection> = {
                let u = usage.read().unwrap_or_else(|e| e.into_inner());
                // the history's own clock: event time (the simulator's may run faster)
                u.history
                    .evaluate(u.history.now_ms(), p.profile.usage_rules(), &u.exemptions)
                    .iter()
                    .map(Detection::from_usage)
                    .collect()
            };
            match reclaim.detect(found, now).await {
                Ok(opened) if !opened.is_empty() => {
                    tracing::info!(cases = ?opened, "reclaim cases opened from the usage findings");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("reclaim detection: {e}"),
            }
        }
        let findings = reclaim.tick(now).await;
        let events = {
            let mut engine = p.policy.lock().unwrap_or_else(|e| e.into_inner());
            let rules: HashSet<&str> = [OVERDUE_RULE, NOTICE_RULE, CALENDAR_RULE]
                .into_iter()
                .collect();
            engine.book_mut().reconcile(&rules, findings, now)
        };
        if p.alarms.publish(events, now).await.is_err() {
            return;
        }
    }
}
