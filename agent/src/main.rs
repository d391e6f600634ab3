//! `yunjian-agent`: sample this node every interval and publish signed reports over MQTT.

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument as _;
use yunjian_agent::antivirus;
use yunjian_agent::collect::{inventory, Sampler, MIN_SAMPLE_GAP, RELIST_EVERY};
use yunjian_agent::config::{self, Broker, Loaded, Overrides};
use yunjian_agent::hypervisor::Hypervisor;
use yunjian_agent::publish::{Identity, Publisher};
use yunjian_protocol::{Action, Body, Command, CommandResult, Inventory, KeyError, NodeKey, Role};

/// Yunjian agent: collects this node's metrics and publishes signed reports over MQTT.
///
/// Settings: defaults < config file < environment (YUNJIAN_AGENT_*) < these options.
#[derive(Debug, Parser)]
#[command(name = "yunjian-agent", version)]
struct Cli {
    /// Config file (TOML); must exist. Default: /etc/yunjian/agent.toml if it exists.
    #[arg(long, global = true, value_name = "FILE", env = "YUNJIAN_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Node id (default: the host name).
    #[arg(long, global = true, value_name = "ID")]
    node_id: Option<String>,
    /// "host" (physical server) or "guest" (virtual machine).
    #[arg(long, global = true, value_name = "host|guest", value_parser = config::parse_role)]
    role: Option<Role>,
    /// MQTT broker.
    #[arg(long, global = true, value_name = "HOST:PORT", value_parser = config::parse_broker)]
    broker: Option<Broker>,
    /// Time between reports, e.g. 10s, 500ms, 2m.
    #[arg(long, global = true, value_name = "DURATION", value_parser = config::parse_duration)]
    interval: Option<Duration>,
    /// This node's key file.
    #[arg(long, global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Rack label.
    #[arg(long, global = true, value_name = "R")]
    rack: Option<String>,
    /// Collect one sample, print it as JSON and exit (no MQTT, no key needed).
    #[arg(long, global = true)]
    once: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Sample and publish until SIGINT/SIGTERM (the default).
    Run,
    /// Print the default configuration file, with comments.
    PrintDefaultConfig,
}

fn main() -> ExitCode {
    match agent(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn agent(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    if let Some(Cmd::PrintDefaultConfig) = cli.command {
        print!("{}", config::default_toml()?);
        return Ok(());
    }
    let loaded = load(&cli)?;
    if cli.once {
        return once(&loaded);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
            let span = tracing::info_span!("agent", node = %loaded.node_id);
            run(loaded).instrument(span).await
        })
}

fn load(cli: &Cli) -> anyhow::Result<Loaded> {
    let file = config::read_config_file(cli.config.as_deref())?;
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("YUNJIAN_AGENT_"))
        .collect();
    let overrides = Overrides {
        node_id: cli.node_id.clone(),
        role: cli.role,
        interval: cli.interval,
        broker: cli.broker.clone(),
        key_file: cli.key_file.clone(),
        rack: cli.rack.clone(),
    };
    let hostname = inventory::hostname();
    Ok(config::resolve(
        file.as_ref(),
        &env,
        overrides,
        hostname.as_deref(),
    )?)
}

/// `--once`: two samples [`MIN_SAMPLE_GAP`] apart so that CPU shares and rates mean
/// something, printed with the inventory and each collector's outcome.
fn once(loaded: &Loaded) -> anyhow::Result<()> {
    let cfg = &loaded.config;
    let mut sampler = Sampler::new(&cfg.paths, &cfg.collectors);
    sampler.sample();
    std::thread::sleep(MIN_SAMPLE_GAP);
    let report = sampler.sample();
    let inventory = inventory::build(&cfg.paths, cfg.role, cfg.rack.as_deref());
    let out = serde_json::json!({
        "inventory": inventory,
        "report": report,
        "collectors": sampler.last_stats(),
        "antivirus": cfg.antivirus.enabled.then(|| antivirus::probe(
            &cfg.antivirus.effective_profiles(),
            &cfg.antivirus.root,
            &cfg.paths.proc,
            std::time::Instant::now() + cfg.antivirus.deadline,
        )),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn read_key(loaded: &Loaded) -> anyhow::Result<NodeKey> {
    let path = &loaded.config.key_file;
    NodeKey::read_file(path).map_err(|e| match e {
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => anyhow!(
            "no key at {path}: enroll this node with `yunjian-aggregator enroll {node} --out {path}`",
            path = path.display(),
            node = loaded.node_id
        ),
        other => other.into(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Facts an operator should know about once, at start.
fn warn_about_gaps(inventory: &Inventory) {
    if inventory.machine_id.is_empty() {
        tracing::warn!("no machine-id: the aggregator cannot tell a re-imaged node apart");
    }
    if inventory.role == Role::Guest && inventory.smbios_uuid.is_none() {
        tracing::warn!(
            "no SMBIOS UUID (class/dmi/id/product_uuid is readable by root only): \
             this guest cannot be joined with its host's view"
        );
    }
}

async fn run(loaded: Loaded) -> anyhow::Result<()> {
    let cfg = &loaded.config;
    let key = read_key(&loaded)?;
    let interval_ms = u32::try_from(cfg.interval.as_millis()).context("interval too long")?;
    tracing::info!(
        config = ?loaded.file,
        broker = %format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
        interval = %config::format_duration(cfg.interval),
        role = cfg.role.as_str(),
        key_file = %cfg.key_file.display(),
        "starting"
    );

    let mut sampler = Sampler::new(&cfg.paths, &cfg.collectors);
    let mut inventory = inventory::build(&cfg.paths, cfg.role, cfg.rack.as_deref());
    warn_about_gaps(&inventory);
    let identity = Identity {
        node: loaded.node_id.clone(),
        key,
        role: cfg.role,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        interval_ms,
    };
    let (publisher, mut commands) = Publisher::start(&cfg.mqtt, &cfg.buffer, identity)
        .await
        .context("cannot start the publisher")?;
    publisher.set_inventory(inventory.clone()).await;

    // The slow antivirus probe runs on its own task and schedule.
    let antivirus_task = cfg.antivirus.enabled.then(|| {
        let task = antivirus::run(
            cfg.antivirus.clone(),
            cfg.paths.proc.clone(),
            publisher.clone(),
        );
        tokio::spawn(task.instrument(tracing::Span::current()))
    });

    // The BMC sweep (physical servers): its own task, blocking I/O under deadlines.
    let ipmi_task = cfg
        .ipmi
        .target(cfg.role)
        .context("cannot read the BMC over IPMI")?
        .map(|target| {
            tracing::info!(bmc = %target.label(), "reading the BMC over IPMI");
            yunjian_agent::ipmi::spawn(&cfg.ipmi, target, cfg.buffer.dir.clone(), publisher.clone())
        });

    // VM commands and guest lists, on the hypervisor's own thread.
    let hypervisor = if cfg.hypervisor.enabled {
        let started = Hypervisor::start(&cfg.hypervisor, publisher.clone())
            .context("cannot start the hypervisor connection")?;
        tracing::info!(uri = %cfg.hypervisor.uri, "carrying out VM commands through libvirt");
        Some(started)
    } else {
        None
    };

    // Baseline for CPU shares and rates; the first report comes one interval later.
    sampler.sample();
    let mut ticker = tokio::time::interval_at(Instant::now() + cfg.interval, cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut commands_open = true;
    let mut ticks_to_inventory_check = RELIST_EVERY;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let ts_ms = now_ms();
                let report = sampler.sample();
                // A buffer write error (disk full, say) loses this report but must not stop
                // the agent: log it (at most once per interval) and carry on.
                match publisher.send(ts_ms, Body::Report(report)).await {
                    Ok(seq) => tracing::debug!(seq, "report queued"),
                    Err(e) => tracing::error!("cannot queue a report: {e}"),
                }
                ticks_to_inventory_check -= 1;
                if ticks_to_inventory_check == 0 {
                    ticks_to_inventory_check = RELIST_EVERY;
                    let fresh = inventory::build(&cfg.paths, cfg.role, cfg.rack.as_deref());
                    if fresh != inventory {
                        tracing::info!("inventory changed; sending it again");
                        publisher.set_inventory(fresh.clone()).await;
                        inventory = fresh;
                    }
                }
            }
            command = commands.recv(), if commands_open => match command {
                Some(command) => answer(&publisher, hypervisor.as_ref(), command).await,
                None => {
                    tracing::warn!("command channel closed; commands are no longer answered");
                    commands_open = false;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    tracing::info!("stopping");
    if let Some(task) = antivirus_task {
        task.abort();
    }
    if let Some(hypervisor) = hypervisor {
        hypervisor.stop();
    }
    if let Some(task) = ipmi_task {
        task.stop().await;
    }
    publisher.shutdown().await;
    Ok(())
}

/// Answer a command: Ping at once; VM actions go to the hypervisor thread, which answers
/// when it has carried them out.
async fn answer(publisher: &Publisher, hypervisor: Option<&Hypervisor>, command: Command) {
    let id = command.id;
    tracing::info!(action = ?command.action, "command received");
    let kind = command.action.kind();
    let answer_now = match (command.action == Action::Ping, hypervisor) {
        (true, _) => Some((true, "pong".to_string())),
        (false, None) => Some((
            false,
            format!("{kind} refused: this agent has no hypervisor connection configured"),
        )),
        (false, Some(hypervisor)) => hypervisor
            .submit(command)
            .err()
            .map(|why| (false, format!("{kind} refused: {why}"))),
    };
    if let Some((ok, message)) = answer_now {
        publisher
            .send_result(CommandResult { id, ok, message })
            .await;
    }
}
