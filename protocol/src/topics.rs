//! The MQTT topic scheme, in one place.
//!
//! | topic                           | direction          | QoS | retained | payload                |
//! |---------------------------------|--------------------|-----|----------|------------------------|
//! | `yunjian/v1/{node}/report`      | agent → aggregator | 1   | no       | frame: hello, inventory, report, event, guests, command result |
//! | `yunjian/v1/{node}/status`      | agent → aggregator | 1   | yes      | frame: `Status::Online`; the last will is `Status::Offline` |
//! | `yunjian/v1/{node}/cmd`         | aggregator → agent | 1   | no       | frame: `Command`       |
//!
//! `{node}` is the node id: 1–64 characters from `[A-Za-z0-9._-]`. The MQTT client id of an
//! agent is `yj-{node}`. The envelope's `node` must equal the topic's `{node}`.
//!
//! An aggregator on an external broker subscribes to reports through the MQTT 5 shared
//! subscription `$share/yunjian/yunjian/v1/+/report` so several aggregators split the load;
//! status topics are subscribed without sharing (retained messages are not delivered on shared
//! subscriptions).

pub const PREFIX: &str = "yunjian/v1";
pub const REPORT_FILTER: &str = "yunjian/v1/+/report";
pub const STATUS_FILTER: &str = "yunjian/v1/+/status";
pub const SHARED_GROUP: &str = "yunjian";

/// Which of the node's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Report,
    Status,
    Command,
}

pub fn report(node: &str) -> String {
    format!("{PREFIX}/{node}/report")
}

pub fn status(node: &str) -> String {
    format!("{PREFIX}/{node}/status")
}

pub fn command(node: &str) -> String {
    format!("{PREFIX}/{node}/cmd")
}

pub fn client_id(node: &str) -> String {
    format!("yj-{node}")
}

/// The shared-subscription filter for an aggregator group on an external broker.
pub fn shared_report_filter() -> String {
    format!("$share/{SHARED_GROUP}/{REPORT_FILTER}")
}

/// Is `id` a valid node id?
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Split a topic into its node id and kind; `None` if it is not a Yunjian node topic.
pub fn parse(topic: &str) -> Option<(&str, TopicKind)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (node, kind) = rest.split_once('/')?;
    if !valid_node_id(node) {
        return None;
    }
    let kind = match kind {
        "report" => TopicKind::Report,
        "status" => TopicKind::Status,
        "cmd" => TopicKind::Command,
        _ => return None,
    };
    Some((node, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_roundtrip() {
        assert_eq!(report("h1"), "yunjian/v1/h1/report");
        assert_eq!(parse(&report("h1")), Some(("h1", TopicKind::Report)));
        assert_eq!(
            parse(&status("a.b-c_d")),
            Some(("a.b-c_d", TopicKind::Status))
        );
        assert_eq!(parse(&command("x")), Some(("x", TopicKind::Command)));
        assert_eq!(parse("yunjian/v1/+/report"), None);
        assert_eq!(parse("yunjian/v1/h1/other"), None);
        assert_eq!(parse("yunjian/v2/h1/report"), None);
        assert_eq!(shared_report_filter(), "$share/yunjian/yunjian/v1/+/report");
    }

    #[test]
    fn node_ids_cannot_carry_wildcards() {
        assert!(valid_node_id("rack1-host07"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a/b"));
        assert!(!valid_node_id("a+"));
        assert!(!valid_node_id("#"));
        assert!(!valid_node_id(&"x".repeat(65)));
    }
}
