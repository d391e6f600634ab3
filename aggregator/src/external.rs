//! Client of an external MQTT broker (`--broker mqtt://host:port`).
//!
//! Reports are taken through the MQTT 5 shared subscription
//! `$share/yunjian/yunjian/v1/+/report`, so several aggregators on one broker split the load;
//! status topics are subscribed without sharing (retained statuses are not delivered on shared
//! subscriptions). Acks are manual: a report is acknowledged to the broker only once ingest
//! has persisted it ([`AckToken`]).

use crate::ratelimit::LogLimiter;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use yunjian_broker::{AckToken, Inbound};
use yunjian_protocol::topics;

/// Where the external broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker URL {url:?}: {reason} (expected mqtt://HOST:PORT)")]
pub struct BrokerUrlError {
    pub url: String,
    pub reason: &'static str,
}

impl std::str::FromStr for BrokerUrl {
    type Err = BrokerUrlError;
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let err = |reason| BrokerUrlError {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| err("only the mqtt:// scheme is supported"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| err("port is not a number"))?),
            None => (rest, 1883),
        };
        if host.is_empty() {
            return Err(err("host is missing"));
        }
        Ok(BrokerUrl {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        })
    }
}

/// How long the broker keeps this aggregator's session (and queues reports for it) while the
/// aggregator is away, e.g. restarting.
pub const SESSION_EXPIRY_S: u32 = 3600;

/// Subscriptions made on every connect: the shared report filter and the status filter.
const FILTERS: usize = 2;

/// Run the client until `shutdown`; every received publish goes to `tx` (awaiting its
/// back-pressure, so the broker keeps what ingest cannot take yet). `ready` fires once the
/// first subscriptions are acknowledged: from then on nothing the agents publish is missed.
pub async fn run(
    url: BrokerUrl,
    client_id: String,
    tx: mpsc::Sender<Inbound>,
    ready: oneshot::Sender<()>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(SESSION_EXPIRY_S);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_start(false)
        .set_connect_properties(props)
        .set_manual_acks(true)
        .set_max_packet_size(Some(1024 * 1024));
    let mut ready = Some(ready);
    let mut subscribed = 0;
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let mut backoff = Duration::from_millis(250);
    let conn_log = LogLimiter::new(30_000);
    loop {
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            _ = shutdown.changed() => {
                let _ = client.try_disconnect();
                return;
            }
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                metrics
                    .health
                    .external_connected(true, crate::ratelimit::now_ms());
                backoff = Duration::from_millis(250);
                subscribed = 0;
                tracing::info!(broker = %format!("{}:{}", url.host, url.port), "connected to external broker");
                for f in [
                    topics::shared_report_filter(),
                    topics::STATUS_FILTER.to_string(),
                ] {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        tracing::error!(filter = %f, "cannot subscribe: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(a))) => {
                let refused = a
                    .return_codes
                    .iter()
                    .any(|c| !matches!(c, SubscribeReasonCode::Success(_)));
                if refused {
                    tracing::error!(codes = ?a.return_codes, "the external broker refused a subscription (does it support MQTT 5 shared subscriptions?)");
                } else {
                    subscribed += 1;
                    if subscribed == FILTERS {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let payload = p.payload.clone();
                let ack = (p.qos != QoS::AtMostOnce).then(|| {
                    let client = client.clone();
                    AckToken::on_drop(move || {
                        let _ = client.try_ack(&p);
                    })
                });
                let msg = Inbound {
                    topic,
                    payload,
                    received: Instant::now(),
                    ack,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics
                    .health
                    .external_connected(false, crate::ratelimit::now_ms());
                if let Some(n) = conn_log.check() {
                    tracing::warn!(broker = %format!("{}:{}", url.host, url.port), suppressed = n, "external broker connection failed: {e}; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(
            "mqtt://10.0.0.5:1884".parse::<BrokerUrl>().unwrap(),
            BrokerUrl {
                host: "10.0.0.5".into(),
                port: 1884
            }
        );
        assert_eq!("mqtt://mq".parse::<BrokerUrl>().unwrap().port, 1883);
        let e = "tcp://x:1".parse::<BrokerUrl>().unwrap_err();
        assert!(e.to_string().contains("mqtt://"), "{e}");
        assert!("mqtt://x:abc".parse::<BrokerUrl>().is_err());
        assert!("mqtt://:1883".parse::<BrokerUrl>().is_err());
    }
}
