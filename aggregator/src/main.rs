//! The `yunjian-aggregator` binary.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator::offline;
use yunjian_aggregator::storage::StorageUrl;
use yunjian_protocol::{topics, MasterKey, Role};

/// Yunjian (云鉴) aggregator: MQTT ingest, fleet state, storage and the dashboard.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML). Precedence: defaults < this file < command-line flags.
    #[arg(long, global = true, env = "YUNJIAN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database and master key).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Dashboard / API address.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Embedded broker address.
    #[arg(long)]
    mqtt_listen: Option<SocketAddr>,
    /// Use an external broker instead of the embedded one: mqtt://HOST:PORT.
    #[arg(long)]
    broker: Option<String>,
    /// Where the data is kept: sqlite:PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DB
    /// (default: SQLite in the data directory).
    #[arg(long, global = true, env = "YUNJIAN_STORAGE")]
    storage: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The role a node is enrolled with (`enroll --role`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EnrollRole {
    /// A physical server (hypervisor host).
    Host,
    /// A VM.
    Guest,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the aggregator (default).
    Run,
    /// Enroll a node: write its key (derived from this aggregator's master key) to a file
    /// readable only by its owner, to be installed as the agent's `key_file`.
    Enroll {
        /// Node id (1-64 characters of A-Z a-z 0-9 . _ -).
        node: String,
        /// What the node is: `host` (a physical server, may list the VMs it runs) or `guest`
        /// (a VM). The role is bound into the key: a VM's key cannot speak for other VMs.
        #[arg(long, value_enum)]
        role: EnrollRole,
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the default configuration as TOML.
    PrintDefaultConfig,
    /// Copy a site's data from one storage to another (stop the aggregator first), e.g.
    /// `migrate-storage --from sqlite:yunjian-data/yunjian.db --to postgres://yj@db/yunjian`.
    /// The target must be empty; it is read back and counted afterwards.
    MigrateStorage {
        /// The storage copied from.
        #[arg(long)]
        from: String,
        /// The (empty) storage copied to.
        #[arg(long)]
        to: String,
    },
    /// Import a filled-in 云资源使用需求表 (附件3, .xlsx or .csv) for a unit into the database
    /// in the data directory, with the API's checks. Run it with the aggregator stopped; while
    /// it runs, use `POST /api/register/import`.
    Import {
        /// 使用单位: the unit the form is for.
        #[arg(long)]
        unit: String,
        /// Who imports (audited).
        #[arg(long)]
        by: String,
        /// `xlsx` or `csv`; default from the file's extension.
        #[arg(long)]
        format: Option<String>,
        file: PathBuf,
    },
    /// Users who sign in to the dashboard and the API.
    #[command(subcommand)]
    User(UserCommand),
    /// For the demo only (scripts/demo.sh runs it once, with the aggregator stopped): a few
    /// applications of the demo's units walked through their steps by the demo's users.
    DemoApplications,
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the audit log's hash chain (from its retention checkpoint, if any) and exit non-zero
    /// naming the first entry that was edited, deleted or reordered. Needs the data directory's
    /// master key (it signs the checkpoints); works on SQLite and PostgreSQL (--storage).
    Verify,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user in the database (the first administrator, or users from an ops script).
    /// Prints a generated initial password once, unless --password-stdin gives one.
    Add {
        /// Login name (1-64 characters of A-Z a-z 0-9 . _ -).
        #[arg(long)]
        name: String,
        /// admin, ops, authority, unit or auditor.
        #[arg(long)]
        role: String,
        /// The unit of a `unit` user (使用单位名称, as in the register).
        #[arg(long)]
        unit: Option<String>,
        /// 姓名 (default: the login name).
        #[arg(long, default_value = "")]
        display_name: String,
        /// Read the initial password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users (name, role, unit, state).
    List,
}

fn load_config(cli: &Cli) -> anyhow::Result<AggregatorConfig> {
    let mut cfg = match &cli.config {
        Some(p) => AggregatorConfig::load(p)?,
        None => AggregatorConfig::default(),
    };
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(a) = cli.http_listen {
        cfg.http_listen = a;
    }
    if let Some(a) = cli.mqtt_listen {
        cfg.broker.listen = a;
    }
    if let Some(b) = &cli.broker {
        cfg.broker_url = Some(b.clone());
    }
    if let Some(s) = &cli.storage {
        cfg.storage = Some(s.parse()?);
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{}", AggregatorConfig::default_toml());
            Ok(())
        }
        Some(Command::Enroll { node, role, out }) => {
            if !topics::valid_node_id(node) {
                bail!("invalid node id {node:?}: use 1-64 characters of A-Z a-z 0-9 . _ -");
            }
            let cfg = load_config(&cli)?;
            yunjian_aggregator::files::private_dir(&cfg.data_dir)
                .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
            let master = MasterKey::load_or_create(&cfg.master_key_path())?;
            let role = match role {
                EnrollRole::Host => Role::Host,
                EnrollRole::Guest => Role::Guest,
            };
            master.node_key(node, role).write_file(out)?;
            eprintln!(
                "enrolled {node} as a {}: key written to {} (mode 0600); set `key_file` in the agent's config to it",
                role.as_str(),
                out.display()
            );
            Ok(())
        }
        Some(Command::Import {
            unit,
            by,
            format,
            file,
        }) => {
            let cfg = load_config(&cli)?;
            let mut db = cfg.storage_url().open()?;
            db.migrate()?;
            // the deployment's profile: its form, zones and clauses
            let profile = yunjian_aggregator_core::policy::Profile::load(&cfg.policy_profile)?;
            let done =
                offline::import_file(db.as_mut(), &profile, unit, by, file, format.as_deref())?;
            eprintln!("{done}");
            Ok(())
        }
        Some(Command::User(UserCommand::Add {
            name,
            role,
            unit,
            display_name,
            password_stdin,
        })) => {
            let role =
                yunjian_aggregator_core::identity::Role::of_person(role).with_context(|| {
                    format!("角色 {role:?} 不存在：可选 admin、ops、authority、unit、auditor")
                })?;
            let password = if *password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                None
            };
            let cfg = load_config(&cli)?;
            let mut db = cfg.storage_url().open()?;
            db.migrate()?;
            let new = offline::NewUserArgs {
                name: name.clone(),
                display_name: display_name.clone(),
                role,
                unit: unit.clone(),
                password,
            };
            eprintln!("{}", offline::add_user(db.as_mut(), new)?);
            Ok(())
        }
        Some(Command::Audit(AuditCommand::Verify)) => {
            let cfg = load_config(&cli)?;
            let master = MasterKey::read_file(&cfg.master_key_path())
                .with_context(|| format!("读取主密钥 {}", cfg.master_key_path().display()))?;
            let key = yunjian_aggregator::service::audit::checkpoint_key(&master);
            let mut db = cfg.storage_url().open()?;
            db.migrate()?;
            let verified = yunjian_aggregator::service::audit::verify(db.as_mut(), &key, |n| {
                if n % 100_000 == 0 {
                    eprintln!("  已校验 {n} 条");
                }
            })
            .map_err(|e| anyhow::anyhow!("审计日志校验失败：{e}"))?;
            match (verified.first_id, verified.last_id) {
                (Some(first), Some(last)) => println!(
                    "审计日志完整：第 {first} 条至第 {last} 条共 {} 条，哈希链连续、未被修改{}",
                    verified.entries,
                    if verified.unchained > 0 {
                        format!(
                            "（另有 {} 条写于哈希链启用之前，未纳入校验）",
                            verified.unchained
                        )
                    } else {
                        String::new()
                    }
                ),
                _ => println!(
                    "审计日志为空（{} 条写于哈希链启用之前）",
                    verified.unchained
                ),
            }
            Ok(())
        }
        Some(Command::User(UserCommand::List)) => {
            let cfg = load_config(&cli)?;
            let mut db = cfg.storage_url().open()?;
            db.migrate()?;
            for u in db.load_users()? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    u.name,
                    u.display_name,
                    u.role,
                    u.unit.as_deref().unwrap_or("-"),
                    if u.disabled { "已停用" } else { "正常" }
                );
            }
            Ok(())
        }
        Some(Command::DemoApplications) => {
            let cfg = load_config(&cli)?;
            let mut db = cfg.storage_url().open()?;
            db.migrate()?;
            let profile = yunjian_aggregator_core::policy::Profile::load(&cfg.policy_profile)?;
            let calendar =
                yunjian_aggregator::reclaim::calendar::Calendar::load(&cfg.reclaim.calendars)?;
            let title = profile.title.clone();
            let done = offline::demo_applications(
                db,
                std::sync::Arc::new(profile),
                std::sync::Arc::new(calendar),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            )?;
            eprintln!("演示申请（依据《{title}》）：\n{done}");
            Ok(())
        }
        Some(Command::MigrateStorage { from, to }) => {
            let from: StorageUrl = from.parse()?;
            let to: StorageUrl = to.parse()?;
            if from == to {
                bail!("--from and --to are the same storage ({from})");
            }
            let mut source = from.open().with_context(|| format!("opening {from}"))?;
            let mut target = to.open().with_context(|| format!("opening {to}"))?;
            eprintln!("copying {from} → {to}");
            let copied = offline::migrate_storage(source.as_mut(), target.as_mut(), |what, n| {
                eprintln!("  {what}: {n} copied");
            })?;
            eprintln!("done, read back and counted: {copied}");
            Ok(())
        }
        Some(Command::Run) | None => {
            let cfg = load_config(&cli)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let agg = Aggregator::start(&cfg).await?;
                let scheme = if agg.https { "https" } else { "http" };
                println!("云鉴 dashboard: {scheme}://{}/", agg.http_addr);
                if let Some(m) = agg.mqtt_addr {
                    println!("embedded MQTT broker: {m}");
                }
                if let Some(m) = agg.mqtts_addr {
                    println!("embedded MQTT broker (TLS): {m}");
                }
                shutdown_signal().await;
                tracing::info!("shutting down");
                agg.shutdown().await;
                anyhow::Ok(())
            })
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
