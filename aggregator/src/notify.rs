//! Notices: alarm changes pushed to webhooks, grouped per using unit so nobody is flooded.
//!
//! Raised, escalated and cleared alarms are collected per unit (platform alarms, which have no
//! unit, go to the operators' group) for `group_window`, then each webhook gets one message per
//! group. Critical alarms (e.g. a removed antivirus, 003 附件1) go out at once.
//!
//! Formats: `generic` (JSON with every event), `wecom` (企业微信群机器人 markdown) and
//! `dingtalk` (钉钉自定义机器人 markdown). The client speaks plain HTTP; robot URLs on the
//! internet need an HTTPS relay inside the government network (TLS is not built in). Webhook
//! URLs often carry a key in their query: only the host and path are ever logged.

use crate::alarms::{AlarmEvent, Level};
use crate::metrics::Metrics;
use crate::ratelimit::LogLimiter;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Group name for alarms that concern no single unit (platform capacity, hosts).
pub const OPERATORS: &str = "运维";

/// `[notify]` section of the aggregator config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// How long alarm changes are collected per unit before one message goes out.
    #[serde(with = "crate::time::duration")]
    pub group_window: Duration,
    pub webhooks: Vec<Webhook>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            group_window: Duration::from_secs(30),
            webhooks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// A name for logs and metrics.
    pub name: String,
    /// `http://host[:port]/path[?query]`.
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// Only these units' alarms (use "运维" for platform alarms); empty: every group.
    #[serde(default)]
    pub units: Vec<String>,
    /// Alarms below this level are not sent.
    #[serde(default = "default_min_level")]
    pub min_level: Level,
}

fn default_min_level() -> Level {
    Level::Warning
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Generic,
    Wecom,
    Dingtalk,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("webhook {name}: {url_redacted}: {reason}")]
    Bad {
        name: String,
        url_redacted: String,
        reason: &'static str,
    },
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub target: String,
}

/// Scheme, host and path only: the query (which may hold a robot key) is dropped.
pub fn redact(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or("").to_string()
}

pub fn parse_url(name: &str, url: &str) -> Result<HttpUrl, UrlError> {
    let bad = |reason| UrlError::Bad {
        name: name.to_string(),
        url_redacted: redact(url),
        reason,
    };
    if url.starts_with("https://") {
        return Err(bad(
            "https is not built in: point the webhook at an HTTP relay inside the network",
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let target = if target.starts_with('?') {
        format!("/{target}")
    } else {
        target
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad("port is not a number"))?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(bad("host is missing"));
    }
    Ok(HttpUrl {
        host: host.to_string(),
        port,
        target,
    })
}

impl NotifyConfig {
    pub fn validate(&self) -> Result<(), UrlError> {
        for w in &self.webhooks {
            parse_url(&w.name, &w.url)?;
        }
        Ok(())
    }
}

/// The group an event belongs to.
fn group_of(e: &AlarmEvent) -> String {
    e.alarm()
        .unit
        .clone()
        .unwrap_or_else(|| OPERATORS.to_string())
}

fn change_zh(e: &AlarmEvent) -> &'static str {
    match e {
        AlarmEvent::Raised(_) => "新告警",
        AlarmEvent::Escalated(_) => "告警升级",
        AlarmEvent::Acknowledged(_) => "已确认",
        AlarmEvent::Cleared(_) => "已恢复",
    }
}

/// The message body for one group in one format.
pub fn render(format: Format, group: &str, events: &[AlarmEvent]) -> serde_json::Value {
    match format {
        Format::Generic => serde_json::json!({
            "source": "yunjian",
            "group": group,
            "events": events,
        }),
        Format::Wecom | Format::Dingtalk => {
            let title = format!("云鉴告警通知 · {group}");
            let mut text = format!("### {title}\n");
            for e in events {
                let a = e.alarm();
                text.push_str(&format!(
                    "- **{}** [{}] {}（依据：{}，编号 {}）\n",
                    change_zh(e),
                    a.level.zh(),
                    a.title,
                    a.clause,
                    a.id
                ));
            }
            if format == Format::Wecom {
                serde_json::json!({"msgtype": "markdown", "markdown": {"content": text}})
            } else {
                serde_json::json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect/send: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("HTTP status {0}")]
    Status(u16),
}

/// POST a JSON body; success is any 2xx.
pub async fn post_json(url: &HttpUrl, body: &serde_json::Value) -> Result<(), SendError> {
    let fut = async {
        let payload = body.to_string();
        let mut s = tokio::net::TcpStream::connect((url.host.as_str(), url.port)).await?;
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: yunjian\r\n\r\n",
            url.target,
            url.host,
            payload.len()
        );
        s.write_all(req.as_bytes()).await?;
        s.write_all(payload.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = s.read(&mut head).await?;
        let status = std::str::from_utf8(&head[..n])
            .ok()
            .and_then(|t| t.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(SendError::Status(status))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| SendError::Timeout)?
}

/// Collects alarm events and sends grouped notices until `stop`.
pub async fn run(
    cfg: NotifyConfig,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<AlarmEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let hooks: Vec<(Webhook, HttpUrl)> = cfg
        .webhooks
        .iter()
        .filter_map(|w| parse_url(&w.name, &w.url).ok().map(|u| (w.clone(), u)))
        .collect();
    let mut pending: BTreeMap<String, Vec<AlarmEvent>> = BTreeMap::new();
    let send_log = LogLimiter::new(30_000);
    let mut tick = tokio::time::interval(cfg.group_window);
    tick.tick().await;
    loop {
        let flush_now = tokio::select! {
            ev = rx.recv() => match ev {
                Some(e) => {
                    if matches!(e, AlarmEvent::Acknowledged(_)) {
                        continue;
                    }
                    let urgent = e.alarm().level == Level::Critical
                        && !matches!(e, AlarmEvent::Cleared(_));
                    pending.entry(group_of(&e)).or_default().push(e);
                    urgent
                }
                None => true,
            },
            _ = tick.tick() => true,
            _ = stop.changed() => true,
        };
        if !flush_now {
            continue;
        }
        for (group, events) in std::mem::take(&mut pending) {
            for (hook, url) in &hooks {
                if !hook.units.is_empty() && !hook.units.contains(&group) {
                    continue;
                }
                let chosen: Vec<AlarmEvent> = events
                    .iter()
                    .filter(|e| e.alarm().level >= hook.min_level)
                    .cloned()
                    .collect();
                if chosen.is_empty() {
                    continue;
                }
                let body = render(hook.format, &group, &chosen);
                let mut result = Err(SendError::Timeout);
                for attempt in 0..3u32 {
                    result = post_json(url, &body).await;
                    if result.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                match result {
                    Ok(()) => {
                        metrics.notices_sent.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        metrics.notices_failed.fetch_add(1, Relaxed);
                        if let Some(n) = send_log.check() {
                            tracing::warn!(webhook = %hook.name, url = %redact(&hook.url), group = %group, suppressed = n, "notice not delivered: {e}");
                        }
                    }
                }
            }
        }
        if *stop.borrow() || rx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_redact() {
        let u = parse_url("w", "http://10.1.2.3:8080/cgi-bin/webhook/send?key=SECRET").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("10.1.2.3", 8080));
        assert_eq!(u.target, "/cgi-bin/webhook/send?key=SECRET");
        assert_eq!(
            redact("http://h/p?key=SECRET"),
            "http://h/p",
            "keys in queries never reach logs"
        );
        let e = parse_url("w", "https://qyapi.weixin.qq.com/x?key=SECRET").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("relay") && !text.contains("SECRET"), "{text}");
        assert!(parse_url("w", "ftp://x").is_err());
        assert_eq!(parse_url("w", "http://h?x=1").unwrap().target, "/?x=1");
    }
}
