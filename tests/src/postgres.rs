//! A private PostgreSQL server for the tests: `initdb` into a tempdir and `postgres` on a free
//! loopback port from the Debian binaries (the newest `/usr/lib/postgresql/<version>/bin`),
//! trust authentication, its socket in the tempdir, no fsync; stopped and removed when
//! dropped. A server already running on the machine is never used: a user's fresh machine has
//! none. One server can hold a database per test ([`TempPostgres::create_database`]).
//!
//! PostgreSQL refuses to run as root; under root (CI, and the development machines) both
//! programs run as the `postgres` system user that the Debian package creates, through
//! `setpriv`, which execs them: the server is the child process itself.

use crate::{free_port, require_tool};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL server, stopped and removed on drop.
#[derive(Debug)]
pub struct TempPostgres {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// The newest installed server's `bin` directory.
fn bin_dir() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// The `postgres` user's uid and gid when we are root (`None`: run as ourselves).
fn postgres_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    let uid = id(&["-u", "postgres"])
        .expect("running as root, PostgreSQL needs the `postgres` system user: `apt-get install postgresql`");
    let gid = id(&["-g", "postgres"]).expect("the postgres user's group");
    Some((uid, gid))
}

/// `program`, run as `user` when given.
fn command(program: &Path, user: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut c = match user {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(program);
            c
        }
        None => Command::new(program),
    };
    // a working directory the server's user may enter
    c.current_dir(dir);
    c
}

impl TempPostgres {
    /// Start a server and wait until it accepts sessions; `None` when PostgreSQL is not
    /// installed and CI is not set (a loud SKIP). Panics, with the server's log, when it does
    /// not come up.
    pub fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            require_tool(&["/usr/lib/postgresql/<version>/bin/initdb"], "postgresql");
            return None;
        };
        let user = postgres_user();
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the tempdir to the postgres user");
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), user, dir.path())
            .arg("-D")
            .arg(&data)
            .args([
                "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale", "C",
            ])
            .arg("--no-sync")
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // the server writes its log through this descriptor, whoever it runs as
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let child = command(&bin.join("postgres"), user, dir.path())
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        let mut pg = TempPostgres { child, port, dir };
        pg.wait_ready(Duration::from_secs(30));
        Some(pg)
    }

    /// Wait until the server answers a query (it listens before it accepts sessions).
    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let url = self.url();
            let answered = off_runtime(move || {
                postgres::Client::connect(&url, postgres::NoTls)
                    .and_then(|mut c| c.simple_query("SELECT 1"))
                    .map(drop)
            });
            let failure = match (answered, self.child.try_wait()) {
                (Ok(_), _) => return,
                (Err(_), Ok(Some(status))) => format!("exited ({status})"),
                (Err(e), _) if start.elapsed() > timeout => {
                    format!("not ready after {timeout:?}: {e}")
                }
                _ => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "PostgreSQL on 127.0.0.1:{} {failure}; its log:\n{log}",
                self.port
            );
        }
    }

    /// The URL of the server's `postgres` database, as its superuser.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    fn database_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Create an empty database and return its URL (one per test, on a shared server).
    pub fn create_database(&self, name: &str) -> String {
        let admin = self.url();
        let sql = format!("CREATE DATABASE \"{name}\"");
        off_runtime(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls)
                .expect("connect to the test server");
            c.batch_execute(&sql).expect("create the test database");
        });
        self.database_url(name)
    }
}

/// The synchronous client blocks on a runtime of its own, which panics on a thread that drives
/// one (async tests): its work runs on a thread of its own.
fn off_runtime<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f)
        .join()
        .expect("postgres client thread")
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the server takes its sessions down with it
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // the tempdir is removed after this, when `dir` drops
    }
}
