//! 003 第十九条 asks for the warning *before* a resource reaches 70%: this rule follows the
//! trend of every used ratio of [`capacity`](super::capacity) and warns when the fitted line
//! reaches the line within the profile's `forecast_horizon_days` ("预计 2026-12-03 达到 70%").
//!
//! The trend ([`Trend`]) runs on event time (the reports' timestamps), fitted on daily means
//! over `forecast_window_days`. The finding is `info` while the crossing is more than half the
//! horizon away and `warning` within half of it (the alarm escalates as the date nears). A ratio
//! already at the line is the capacity rule's alarm, not a forecast.

use super::capacity::{measure_use, Kind, Resource};
use crate::alarms::{AlarmKey, Finding, Level};
use crate::policy::forecast::Trend;
use crate::policy::{Context, Findings, Profile, Rule};
use crate::time::beijing_date;
use std::collections::HashMap;

pub const NAME: &str = "capacity_forecast";

/// One trend per (scope, resource).
#[derive(Debug, Default)]
pub struct CapacityForecast {
    trends: HashMap<String, [Trend; 4]>,
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(CapacityForecast::default())
}

impl Rule for CapacityForecast {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.capacity
    }

    fn interval_ms(&self) -> u64 {
        crate::policy::AGGREGATE_INTERVAL_MS
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        let cap = &ctx.profile.capacity;
        let line = cap.thresholds.warn_pct;
        let horizon = f64::from(cap.forecast_horizon_days);
        let scopes = measure_use(ctx.fleet, ctx.register);
        self.trends
            .retain(|id, _| scopes.iter().any(|s| &s.id == id));
        for s in scopes.iter().filter(|s| s.ts_ms > 0) {
            if !self.trends.contains_key(&s.id) {
                let t = Trend::new(cap.forecast_window_days);
                self.trends
                    .insert(s.id.clone(), [t.clone(), t.clone(), t.clone(), t]);
            }
            let Some(trends) = self.trends.get_mut(&s.id) else {
                continue;
            };
            for r in Resource::ALL {
                let Some(pct) = s.figures(r).pct(Kind::Used) else {
                    continue;
                };
                let trend = &mut trends[r as usize];
                trend.push(s.ts_ms, pct);
                let Some(f) = trend.forecast(line) else {
                    continue;
                };
                if f.days_left > horizon {
                    continue;
                }
                let level = if f.days_left <= horizon / 2.0 {
                    Level::Warning
                } else {
                    Level::Info
                };
                let date = beijing_date(f.at_ms);
                out.push(Finding {
                    key: AlarmKey {
                        rule: NAME.into(),
                        subject: s.subject(r, Kind::Used),
                    },
                    level,
                    clause: ctx.profile.clauses.capacity.clone(),
                    unit: None,
                    title: format!(
                        "{} {}{}按近 {} 天趋势预计 {date} 达到 {line}%（当前 {:.1}%，每天 +{:.2}%），请提前报请扩容",
                        s.name_zh(),
                        r.zh(),
                        Kind::Used.zh(),
                        f.days,
                        pct,
                        f.slope_per_day,
                    ),
                    evidence: serde_json::json!({
                        "scope": s.id,
                        "pool": s.pool,
                        "resource": r.as_str(),
                        "kind": Kind::Used.as_str(),
                        "pct": (pct * 10.0).round() / 10.0,
                        "threshold": line,
                        "date": date,
                        "crossing_ms": f.at_ms,
                        "days_left": (f.days_left * 10.0).round() / 10.0,
                        "slope_pct_per_day": (f.slope_per_day * 100.0).round() / 100.0,
                        "fitted_days": f.days,
                        "window_days": cap.forecast_window_days,
                        "horizon_days": cap.forecast_horizon_days,
                        "event_ms": s.ts_ms,
                    }),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::policy::forecast::{DAY_MS, HOUR_MS};
    use crate::policy::rules::capacity::tests::{feed, inventory, report};
    use crate::register::Register;
    use yunjian_protocol::Role;

    /// 2026-03-02 00:00 Beijing time.
    const T0: u64 = 1_772_380_800_000;

    /// Two hosts' memory climbing `per_day` points a day from `start`, a report every 2 event
    /// hours for `days`, the rule evaluated after each (wall clock: one minute apart).
    fn run(start: f64, per_day: f64, days: u64) -> Vec<Vec<Finding>> {
        let mut fleet = Fleet::new();
        let register = Register::default();
        let profile = Profile::default();
        let mut rule = CapacityForecast::default();
        let mut all = Vec::new();
        let mut ts = T0;
        let mut now = 1_000_000;
        while ts < T0 + days * DAY_MS {
            let pct = start + per_day * (ts - T0) as f64 / DAY_MS as f64;
            for h in ["h1", "h2"] {
                let mut bodies = vec![report(20.0, 256, pct, &[])];
                if ts == T0 {
                    bodies.insert(0, inventory(Role::Host, 32, 256, 1000, None));
                }
                feed(&mut fleet, h, Role::Host, bodies, ts);
            }
            let mut out = Findings::new();
            rule.evaluate(
                &Context {
                    fleet: &fleet,
                    register: &register,
                    profile: &profile,
                    now_ms: now,
                },
                &mut out,
            );
            all.push(out.into_vec());
            ts += 2 * HOUR_MS;
            now += 60_000;
        }
        all
    }

    #[test]
    fn a_climbing_pool_gets_its_date_within_the_horizon() {
        // 40.5 % → +1 a day: 70 % on day 29.5 (2026-03-31), within 30 days once 4 days are seen
        let all = run(40.5, 1.0, 6);
        let last = all.last().unwrap();
        let mem: Vec<&Finding> = last
            .iter()
            .filter(|f| f.key.subject == "platform/memory/used")
            .collect();
        assert_eq!(mem.len(), 1, "{last:?}");
        let f = mem[0];
        assert_eq!(f.key.rule, NAME);
        assert_eq!(f.evidence["date"], "2026-03-31");
        // 23.6 days ahead, more than half the 30-day horizon: info
        assert_eq!(f.level, Level::Info);
        assert!(
            f.title.starts_with(
                "全平台 内存使用率按近 5 天趋势预计 2026-03-31 达到 70%（当前 46.4%，每天 +1.00%）"
            ),
            "{}",
            f.title
        );
        // the other resources are flat
        assert_eq!(last.len(), 1);
        // the first three days have too little history
        assert!(all[..3 * 12].iter().all(Vec::is_empty));
    }

    #[test]
    fn a_steep_climb_is_a_warning_and_a_far_one_is_silent() {
        let all = run(41.5, 3.0, 6);
        let f = &all.last().unwrap()[0];
        // 70 % on day 9.5, under four days ahead
        assert_eq!(f.evidence["date"], "2026-03-11");
        assert_eq!(f.level, Level::Warning);
        // +0.5 a day from 40 %: day 60, beyond the horizon
        assert!(run(40.0, 0.5, 6).iter().all(Vec::is_empty));
        // falling
        assert!(run(60.0, -1.0, 6).iter().all(Vec::is_empty));
    }
}
