//! Wiring: storage → fleet → ingest → broker or external client → web, and a clean shutdown.

use crate::alarms::AlarmBook;
use crate::config::AggregatorConfig;
use crate::external::BrokerUrl;
use crate::fleet::{Fleet, SharedFleet};
use crate::ingest::StoreHandle;
use crate::ingest::{self, Ingester, Pending};
use crate::metrics::Metrics;
use crate::policy::SharedPolicy;
use crate::policy::{rules, Context, Engine, Profile, ProfileError};
use crate::ratelimit::now_ms;
use crate::register::SharedRegister;
use crate::service::AlarmSink;
use crate::store::StorageError;
use crate::web::{self, AppState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use yunjian_broker::{Broker, BrokerError};

/// After a restart, how long restored alarms are kept without a rule confirming them: long
/// enough for agents to reconnect and report (node_down alone waits 3 report intervals).
const ALARM_RESTORE_HOLD: Duration = Duration::from_secs(120);

/// How long start-up waits for the external broker's subscriptions before serving anyway.
const EXTERNAL_READY_WAIT: Duration = Duration::from_secs(10);
use tokio::task::JoinHandle;
use yunjian_protocol::{topics, KeyError, MasterKey};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("master key: {0}")]
    Key(#[from] KeyError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("register pools: {0}")]
    Pools(#[from] crate::register::pools::PoolsError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("dashboard HTTPS ([http.tls]): {0}")]
    Tls(#[from] yunjian_tls::TlsError),
    #[error(transparent)]
    Calendar(#[from] crate::reclaim::calendar::CalendarError),
    #[error("{0}")]
    BrokerUrl(#[from] crate::external::BrokerUrlError),
    #[error(
        "cannot listen on {addr} for the dashboard: {source}; choose another with `--http-listen`"
    )]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running aggregator.
#[derive(Debug)]
pub struct Aggregator {
    pub http_addr: SocketAddr,
    /// The embedded broker's plain listener (`None` with an external broker or `plain = false`).
    pub mqtt_addr: Option<SocketAddr>,
    /// The embedded broker's TLS listener (`None` without `[broker.tls]`).
    pub mqtts_addr: Option<SocketAddr>,
    /// Whether the dashboard is served over HTTPS (`[http.tls]`).
    pub https: bool,
    pub fleet: SharedFleet,
    pub metrics: Arc<Metrics>,
    pub master: MasterKey,
    broker: Option<Broker>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    storage_thread: Option<std::thread::JoinHandle<()>>,
}

impl Aggregator {
    pub async fn start(cfg: &AggregatorConfig) -> Result<Aggregator, StartError> {
        raise_open_files(cfg);
        crate::files::private_dir(&cfg.data_dir).map_err(|source| StartError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        let master = MasterKey::load_or_create(&cfg.master_key_path())?;
        let url = cfg.storage_url();
        let mut storage = url.open_off_runtime()?;
        let version = storage.migrate()?;
        let fleet = Fleet::shared();
        let restored = {
            let rows = storage.load_nodes()?;
            let mut f = fleet.write().unwrap_or_else(|p| p.into_inner());
            let n = rows.len();
            for row in rows {
                f.restore(row.into_state()?, now_ms());
            }
            for r in storage.load_sel(crate::hardware::SEL_KEPT)? {
                if let Some(t) = f.hardware_mut(&r.node) {
                    t.restore_sel([r.record]);
                }
            }
            n
        };
        tracing::info!(storage = %url, schema = version, restored, "storage ready");

        let profile = Arc::new(Profile::load(&cfg.policy_profile)?);
        let mut book = AlarmBook::new();
        // Restored alarms stay until the rules have seen fresh data after the restart.
        book.restore(
            storage.open_alarms()?,
            now_ms() + ALARM_RESTORE_HOLD.as_millis() as u64,
        );
        let policy: SharedPolicy = Arc::new(Mutex::new(Engine::new(
            rules::build(&profile, &cfg.disabled_rules),
            book,
        )));
        let register: SharedRegister = Arc::new(std::sync::RwLock::new(
            crate::register::with_pools(storage.load_register()?, cfg.pools_file.as_deref())?,
        ));
        let mut reader = url.open_off_runtime()?;
        tracing::info!(profile = %profile.name, title = %profile.title, "policy profile");
        // Utilisation history (by event time) and the exemption register; days older than the
        // retention before the latest stored day are dropped.
        let usage = crate::usage::Usage::shared(&profile.usage);
        let time_bounds = cfg.event_time.bounds();
        {
            let mut u = usage.write().unwrap_or_else(|p| p.into_inner());
            // Days after the event-time bound were stored before ingest checked it (a node's
            // clock years ahead); restoring one would move the history's "today" with it.
            let latest = u
                .history
                .day_of(now_ms().saturating_add(time_bounds.max_ahead_ms));
            let (days, ahead): (Vec<_>, Vec<_>) = reader
                .load_usage(crate::time::Day::MIN)?
                .into_iter()
                .partition(|r| r.summary.day <= latest);
            if let Some(first) = ahead.first() {
                tracing::warn!(
                    days = ahead.len(),
                    example_vm = %first.vm,
                    example_day = %first.summary.day,
                    "utilisation days after today ignored (stored from a clock that ran ahead)"
                );
            }
            u.history.restore(days);
            u.exemptions = crate::usage::Exemptions::restore(reader.load_exemptions()?);
            if u.history.now_ms() > 0 {
                let today = u.history.day_of(u.history.now_ms());
                let keep_from = today - profile.usage.retention_days as i32 + 1;
                if let Err(e) = reader.expire_usage(keep_from) {
                    tracing::warn!("utilisation history retention: {e}");
                }
            }
            tracing::info!(
                vms = u.history.len(),
                exemptions = u.exemptions.list().len(),
                "utilisation history loaded"
            );
        }

        let metrics = Arc::new(Metrics::default());
        metrics.health.configure(cfg.health.clone());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (changes_tx, changes_rx) = watch::channel(0u64);
        let (in_tx, in_rx) = mpsc::channel(cfg.ingest_queue);
        metrics.health.ingest_queue(&in_tx);
        let (store_tx, store_rx) = mpsc::channel::<Pending>(64);
        let store = StoreHandle::new(store_tx.clone());

        let storage_thread = {
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("yj-storage".into())
                .spawn(move || {
                    let mut storage = storage;
                    let health = metrics.clone();
                    let _running = health.health.storage_thread();
                    ingest::storage_loop(storage.as_mut(), store_rx, metrics)
                })
                .map_err(|source| StartError::DataDir {
                    path: "storage thread".into(),
                    source,
                })?
        };
        let mut tasks = Vec::new();
        let ingester = Ingester::new(fleet.clone(), metrics.clone(), master.clone())
            .with_usage(usage.clone())
            .with_time_bounds(time_bounds);
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let ingester = ingester.with_command_results(results_tx);
        tasks.push(tokio::spawn(ingest::run(
            ingester,
            in_rx,
            store_tx,
            changes_tx.clone(),
        )));

        let (broker, mqtt_addr, mqtts_addr) = match &cfg.broker_url {
            None => {
                let b = Broker::start(
                    cfg.broker.clone(),
                    Some(master.clone()),
                    metrics.broker.clone(),
                    vec![
                        (topics::REPORT_FILTER.to_string(), in_tx.clone()),
                        (topics::STATUS_FILTER.to_string(), in_tx.clone()),
                    ],
                    shutdown_rx.clone(),
                )
                .await?;
                let (plain, tls) = (b.local_addr(), b.tls_addr());
                metrics
                    .health
                    .embedded_broker(plain.into_iter().chain(tls).collect());
                (Some(b), plain, tls)
            }
            Some(url) => {
                let url: BrokerUrl = url.parse()?;
                tracing::info!(broker = %url.host, port = url.port, "using the external broker");
                let (ready_tx, ready_rx) = oneshot::channel();
                metrics.health.external_broker();
                tasks.push(tokio::spawn(crate::external::run(
                    url.clone(),
                    cfg.client_id.clone(),
                    in_tx.clone(),
                    ready_tx,
                    metrics.clone(),
                    shutdown_rx.clone(),
                )));
                // Start serving once subscribed, so agents started next lose nothing; a
                // broker that is not there yet is retried in the background.
                if tokio::time::timeout(EXTERNAL_READY_WAIT, ready_rx)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        broker = %url.host, port = url.port,
                        "not subscribed on the external broker after {EXTERNAL_READY_WAIT:?}; still trying"
                    );
                }
                (None, None, None)
            }
        };
        drop(in_tx);

        let (notice_tx, notice_rx) = mpsc::channel(4096);
        let alarm_sink = AlarmSink {
            notices: notice_tx,
            store: store.clone(),
            changes: changes_tx.clone(),
        };
        let reclaim = {
            let outlet = match (&broker, &cfg.broker_url) {
                (Some(b), _) => crate::reclaim::Outlet::Embedded(b.clone()),
                (None, Some(url)) => {
                    let (o, t) = crate::reclaim::Outlet::external(
                        &url.parse()?,
                        &cfg.client_id,
                        shutdown_rx.clone(),
                    );
                    tasks.push(t);
                    o
                }
                (None, None) => crate::reclaim::Outlet::Detached,
            };
            let r = crate::reclaim::Reclaim::start(
                url.open_off_runtime()?,
                cfg.reclaim.clone(),
                profile.reclaim.clone(),
                crate::reclaim::calendar::Calendar::load(&cfg.reclaim.calendars)?,
                master.clone(),
                outlet,
                fleet.clone(),
                register.clone(),
            )?;
            tasks.push(tokio::spawn(crate::reclaim::drive::run(
                r.clone(),
                results_rx,
                crate::reclaim::drive::Parts {
                    policy: policy.clone(),
                    alarms: alarm_sink.clone(),
                    changes: changes_tx.clone(),
                    usage: Some(usage.clone()),
                    profile: profile.clone(),
                },
                shutdown_rx.clone(),
            )));
            r
        };
        // Applications (申请 → 终止): their register changes take the register's one turn
        // (shared with the reclaim cases and the register's own changes).
        let applications = crate::service::applications::Applications::start(
            url.open_off_runtime()?,
            profile.clone(),
            reclaim.calendar.clone(),
            register.clone(),
            reclaim.register_turn.clone(),
            Some(reclaim.clone()),
        )?;
        tasks.push(tokio::spawn(crate::service::applications::run(
            applications.clone(),
            policy.clone(),
            alarm_sink.clone(),
            cfg.reclaim.tick,
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::notify::run(
            cfg.notify.clone(),
            metrics.clone(),
            notice_rx,
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(policy_task(
            PolicyParts {
                alarms: alarm_sink,
                fleet: fleet.clone(),
                register: register.clone(),
                profile: profile.clone(),
                policy: policy.clone(),
                interval: cfg.policy_interval,
            },
            shutdown_rx.clone(),
        )));
        // Audit retention (000 第二十三条, 001 第十九条): entries older than the profile's months
        // go, at start and then daily, leaving a checkpoint signed with a key derived from the
        // master key (not a valid node id, so no agent holds it).
        let audit_key = crate::service::audit::checkpoint_key(&master);
        let audit_months = profile.retention.audit_months;
        crate::service::audit::prune(reader.as_mut(), &audit_key, audit_months, now_ms());

        // Silence sweep: a node that stops talking without a last will turns "silent".
        {
            let fleet = fleet.clone();
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    let changed = fleet
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .sweep_silence(now_ms());
                    if changed > 0 {
                        changes_tx.send_modify(|v| *v += 1);
                    }
                }
            }));
        }

        // a bad certificate or key stops the start here, naming the file
        let https = cfg
            .http
            .tls
            .as_ref()
            .map(|files| yunjian_tls::acceptor(files, &[b"http/1.1"]))
            .transpose()?;
        let secure = https.is_some();
        let listener =
            TcpListener::bind(cfg.http_listen)
                .await
                .map_err(|source| StartError::Http {
                    addr: cfg.http_listen,
                    source,
                })?;
        let http_addr = listener.local_addr().map_err(|source| StartError::Http {
            addr: cfg.http_listen,
            source,
        })?;
        let directory =
            crate::service::identity::Directory::new(reader.load_users()?, reader.load_tokens()?);
        tracing::info!(users = directory.users().count(), "users loaded");
        // the reclaim service changes the register too (downsize, release): one turn for both
        let register_turn = reclaim.register_turn.clone();
        let state = AppState {
            fleet: fleet.clone(),
            metrics: metrics.clone(),
            changes: changes_rx,
            policy: policy.clone(),
            register: register.clone(),
            profile: profile.clone(),
            store: store.clone(),
            reader: Some(Arc::new(Mutex::new(reader))),
            reclaim: Some(reclaim),
            applications: Some(applications),
            usage: usage.clone(),
            register_turn,
            exemption_turn: Arc::default(),
            auth: crate::web::session::Auth {
                directory: Arc::new(std::sync::RwLock::new(directory)),
                ..crate::web::session::Auth::default()
            },
        };
        if let Some(reader) = state.reader.clone() {
            tasks.push(tokio::spawn(crate::service::audit::prune_daily(
                reader,
                audit_key,
                audit_months,
                shutdown_rx.clone(),
            )));
        }
        {
            let mut stop = shutdown_rx.clone();
            let http = cfg.http.clone();
            tasks.push(tokio::spawn(async move {
                let until = async move {
                    let _ = stop.changed().await;
                };
                if let Err(e) = web::serve_with(listener, state, http, https, until).await {
                    tracing::error!("web server failed: {e}");
                }
            }));
        }
        // migrations ran, history is loaded, the listeners are up: `/readyz` says so
        metrics.health.set_phase(crate::health::Phase::Ready);
        let scheme = if secure { "https" } else { "http" };
        tracing::info!(dashboard = %format!("{scheme}://{http_addr}/"), "aggregator running");
        Ok(Aggregator {
            http_addr,
            mqtt_addr,
            mqtts_addr,
            https: secure,
            fleet,
            metrics,
            master,
            broker,
            shutdown,
            tasks,
            storage_thread: Some(storage_thread),
        })
    }

    pub fn broker(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    /// Stop accepting, let ingest and storage finish what they hold, and return.
    pub async fn shutdown(mut self) {
        self.metrics
            .health
            .set_phase(crate::health::Phase::Stopping);
        let _ = self.shutdown.send(true);
        self.broker = None;
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if let Some(h) = self.storage_thread.take() {
            // The storage loop ends when ingest's sender is gone: wait for it off the runtime.
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Raise the soft open-file limit to the hard one and log it. Every MQTT and HTTP connection
/// takes a file descriptor, and the usual soft limit of 1,024 runs out long before a fleet's
/// connections (or slow clients) reach `broker.max_connections` and `http.max_connections`:
/// then every accept fails, MQTT logins and `/healthz` alike. Warns when even the hard limit
/// is below what those caps let in.
fn raise_open_files(cfg: &AggregatorConfig) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            return;
        }
    };
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, "cannot raise the open-file limit: {e}");
                soft
            }
        }
    } else {
        soft
    };
    let broker = match cfg.broker_url {
        None => cfg.broker.max_connections as u64,
        Some(_) => 0,
    };
    // storage, the listeners and the runtime's own descriptors
    let wanted = broker + cfg.http.max_connections as u64 + 256;
    if limit < wanted {
        tracing::warn!(
            limit,
            wanted,
            "open-file limit below what broker.max_connections and http.max_connections let in: \
             accepts will fail (and back off) before the caps refuse; raise the hard limit \
             (systemd LimitNOFILE=) or lower the caps"
        );
    } else {
        tracing::info!(limit, "open-file limit");
    }
}

struct PolicyParts {
    alarms: AlarmSink,
    fleet: SharedFleet,
    register: SharedRegister,
    profile: Arc<Profile>,
    policy: SharedPolicy,
    interval: Duration,
}

/// Evaluate every rule on a fixed interval; persist and audit the alarm changes.
async fn policy_task(p: PolicyParts, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(p.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = now_ms();
        let events = {
            let fleet = p.fleet.read().unwrap_or_else(|e| e.into_inner());
            let register = p.register.read().unwrap_or_else(|e| e.into_inner());
            let mut engine = p.policy.lock().unwrap_or_else(|e| e.into_inner());
            engine.evaluate(&Context {
                fleet: &fleet,
                register: &register,
                profile: &p.profile,
                now_ms: now,
            })
        };
        if p.alarms.publish(events, now).await.is_err() {
            return; // storage closed: shutting down
        }
    }
}
