//! `yunjian-simulator`: run a scenario against a broker until Ctrl-C or `--duration`.

use anyhow::{bail, Context};
use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;
use yunjian_protocol::MasterKey;
use yunjian_simulator::{parse_duration, Scenario, SimConfig, SimStats};

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often the backfill's end is looked for, and how many of those looks between two
/// progress lines.
const BACKFILL_POLL: Duration = Duration::from_millis(100);
const BACKFILL_PROGRESS_POLLS: u32 = 20;
/// Bare-metal servers per rack with `--hosts`.
const HOSTS_PER_RACK: u32 = 40;

/// Simulate racks of servers and VMs, each a separate signed MQTT agent.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Scenario file (see simulator/scenarios/*.toml).
    #[arg(long, required_unless_present = "hosts", conflicts_with = "hosts")]
    scenario: Option<PathBuf>,
    /// Instead of a file: N bare-metal servers of mixed profiles, in racks of 40.
    #[arg(long)]
    hosts: Option<u32>,
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// The aggregator's master key file; every node signs with its key derived from it.
    #[arg(long, required_unless_present = "register_forms")]
    master_key_file: Option<PathBuf>,
    /// Write the scenario's allocation register as 附件3 CSV forms (one per unit) into this
    /// directory and exit, for `yunjian-aggregator import`.
    #[arg(long)]
    register_forms: Option<PathBuf>,
    /// Override the scenario's time acceleration.
    #[arg(long)]
    accel: Option<f64>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// New connections per second (default: all at once).
    #[arg(long)]
    connect_rate: Option<u32>,
    /// Stop after this wall time, e.g. `10m`.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
}

fn split_broker(addr: &str) -> anyhow::Result<(String, u16)> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        bail!("--broker {addr:?}: expected HOST:PORT");
    };
    let port = port
        .parse()
        .with_context(|| format!("--broker {addr:?}: bad port"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// The soft limit on open files from the text of `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn progress(s: &SimStats, reports_per_s: f64) {
    tracing::info!(
        connected = s.connected,
        nodes = s.nodes,
        reports_per_s = format!("{reports_per_s:.0}"),
        reports = s.reports,
        acked = s.acked,
        buffered = s.buffered,
        dropped = s.dropped,
        reconnects = s.reconnects,
        start_failures = s.start_failures,
        "progress"
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Every node's publisher logs its connection at info: with thousands of nodes only the
    // simulator's own progress is worth reading unless RUST_LOG asks for more.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,yunjian_agent=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();

    let mut scenario = match (&args.scenario, args.hosts) {
        (Some(path), _) => Scenario::load(path)?,
        (None, Some(n)) => {
            let racks = n.div_ceil(HOSTS_PER_RACK);
            let mut s = Scenario::uniform(racks, HOSTS_PER_RACK, 0, Scenario::default().seed);
            if let Some(last) = s.racks.last_mut() {
                last.hosts = n - (racks - 1) * HOSTS_PER_RACK;
            }
            s
        }
        (None, None) => bail!("give --scenario FILE or --hosts N"),
    };
    if let Some(a) = args.accel {
        scenario.accel = a;
    }
    if let Some(s) = args.seed {
        scenario.seed = s;
    }
    scenario
        .validate()
        .map_err(|e| anyhow::anyhow!("scenario after command-line overrides: {e}"))?;
    // said when it happens within the run (or its first day, for a run without an end)
    let horizon = args.duration.unwrap_or(Duration::from_secs(86_400));
    if let Some(after) = scenario
        .overtakes_wall_clock(yunjian_simulator::clock::unix_now_ms())
        .filter(|after| *after < horizon)
    {
        tracing::warn!(
            after_s = after.as_secs(),
            accel = scenario.accel,
            "the accelerated event time overtakes the wall clock after this many seconds; the aggregator refuses reports more than its [event_time] max_ahead (10 min by default) ahead: give the scenario a `start` further in the past"
        );
    }

    if let Some(dir) = &args.register_forms {
        let fleet = yunjian_simulator::fleet::Fleet::build(scenario)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (unit, csv) in yunjian_simulator::forms::register_forms(&fleet) {
            let path = dir.join(format!("{unit}.csv"));
            std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
            println!("{}\t{}", unit, path.display());
        }
        return Ok(());
    }
    let Some(master_key_file) = &args.master_key_file else {
        bail!("--master-key-file is required to run the simulation");
    };

    let nodes = scenario.node_count() as u64;
    if let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(max_open_files)
    {
        if limit < nodes + 64 {
            tracing::warn!(
                limit,
                nodes,
                "open-file limit below one socket per node; raise it with `ulimit -n {}`",
                nodes + 1024
            );
        }
    }

    let (broker_host, broker_port) = split_broker(&args.broker)?;
    let master_key = MasterKey::read_file(master_key_file)?;
    let sim = yunjian_simulator::start(
        scenario,
        SimConfig {
            broker_host,
            broker_port,
            master_key,
            connect_rate: args.connect_rate,
        },
    )
    .await?;

    let started = Instant::now();
    // The history every node publishes first, in reports over all nodes; `None` once out.
    let mut backfill_total = sim.backfill().map(|b| b.count * nodes);
    if let (Some(total), Some(b)) = (backfill_total, sim.backfill()) {
        tracing::info!(
            "backfill: {total} reports ({} per node, {} s apart in event time), then real time",
            b.count,
            b.interval_ms / 1000
        );
    }
    let mut backfill_poll = tokio::time::interval(BACKFILL_POLL);
    let mut backfill_polls = 0u32;
    // Report once how long the whole fleet took to connect (the connection-storm figure).
    let mut all_connected = false;
    let mut connect_poll = tokio::time::interval(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    let mut last = (Instant::now(), 0u64);
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = connect_poll.tick(), if !all_connected => {
                if sim.stats().connected as u64 == nodes {
                    all_connected = true;
                    tracing::info!(
                        nodes,
                        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                        "all nodes connected"
                    );
                }
            }
            _ = backfill_poll.tick(), if backfill_total.is_some() => {
                let s = sim.stats();
                let per_node = sim.backfill().map_or(0, |b| b.count);
                // nodes whose publisher could not start send nothing
                let total = backfill_total.unwrap_or_default() - per_node * s.start_failures as u64;
                backfill_polls += 1;
                if s.backfilled >= total {
                    tracing::info!(
                        "backfill: {} of {total} reports, done in {:.1} s ({:.0} reports/s)",
                        s.backfilled,
                        started.elapsed().as_secs_f64(),
                        s.backfilled as f64 / started.elapsed().as_secs_f64().max(0.001)
                    );
                    backfill_total = None;
                } else if backfill_polls.is_multiple_of(BACKFILL_PROGRESS_POLLS) {
                    tracing::info!(
                        "backfill: {} of {total} reports ({:.0} s)",
                        s.backfilled,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            _ = ticker.tick() => {
                let s = sim.stats();
                let now = Instant::now();
                let rate = (s.reports - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, s.reports);
                progress(&s, rate);
            }
            r = tokio::signal::ctrl_c() => {
                r.context("waiting for Ctrl-C")?;
                tracing::info!("Ctrl-C: stopping every node");
                break;
            }
            () = &mut until => {
                tracing::info!("duration reached: stopping every node");
                break;
            }
        }
    }
    let s = sim.stats();
    progress(
        &s,
        s.reports as f64 / started.elapsed().as_secs_f64().max(0.001),
    );
    sim.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_split() {
        assert_eq!(
            split_broker("127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(split_broker("[::1]:1884").unwrap(), ("::1".into(), 1884));
        assert!(split_broker("localhost").is_err());
        assert!(split_broker("h:99999").is_err());
    }

    #[test]
    fn open_file_limit_is_read() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(text), Some(1024));
        assert_eq!(max_open_files("nothing"), None);
    }
}
