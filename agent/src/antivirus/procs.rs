//! Running processes from `{proc}/[0-9]*/`: their name (`comm`) and executable (`exe`, or the
//! first word of `cmdline` when the link cannot be read).

use std::path::Path;
use std::time::Instant;

/// What identifies one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// `comm`: the kernel's name of the process, at most 15 bytes.
    pub comm: String,
    /// Path of the executable, without the kernel's ` (deleted)` mark.
    pub exe: Option<String>,
}

/// `comm` is cut to this many bytes by the kernel.
const COMM_LEN: usize = 15;
/// The deadline is checked every this many processes.
const CHECK_EVERY: usize = 64;

/// Every process under `proc`. Processes that end while being read are skipped. Stops early
/// when `deadline` passes and says so in the error, keeping what was read.
pub fn scan(proc: &Path, deadline: Instant) -> (Vec<Proc>, Option<String>) {
    let entries = match std::fs::read_dir(proc) {
        Ok(entries) => entries,
        Err(e) => return (Vec::new(), Some(format!("{}: {e}", proc.display()))),
    };
    let mut out = Vec::new();
    for (i, entry) in entries.flatten().enumerate() {
        if i % CHECK_EVERY == 0 && Instant::now() > deadline {
            return (
                out,
                Some(format!(
                    "process scan stopped at its deadline after {i} entries"
                )),
            );
        }
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_pid) {
            continue;
        }
        let dir = entry.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .or_else(|| {
                std::fs::read(dir.join("cmdline"))
                    .ok()
                    .and_then(|raw| argv0(&raw))
            })
            .map(|p| strip_deleted(&p).to_string());
        out.push(Proc {
            comm: comm.trim_end_matches('\n').to_string(),
            exe,
        });
    }
    (out, None)
}

fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// The first word of a `cmdline` (NUL-separated) when it is an absolute path.
pub fn argv0(cmdline: &[u8]) -> Option<String> {
    let first = cmdline.split(|&b| b == 0).next()?;
    let text = std::str::from_utf8(first).ok()?;
    text.starts_with('/').then(|| text.to_string())
}

/// The kernel appends ` (deleted)` to the link of a replaced or removed executable.
pub fn strip_deleted(exe: &str) -> &str {
    exe.strip_suffix(" (deleted)").unwrap_or(exe)
}

/// Whether `p` is what the profile's `pattern` names: a path ending in `/` prefixes the
/// executable's path, another path equals it, and a bare name equals the process name (cut to
/// 15 bytes like the kernel does) or the executable's file name.
pub fn matches(pattern: &str, p: &Proc) -> bool {
    if pattern.ends_with('/') {
        return p.exe.as_deref().is_some_and(|e| e.starts_with(pattern));
    }
    if pattern.contains('/') {
        return p.exe.as_deref() == Some(pattern);
    }
    let mut end = pattern.len().min(COMM_LEN);
    while !pattern.is_char_boundary(end) {
        end -= 1;
    }
    p.comm == pattern[..end]
        || p.exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .is_some_and(|base| base == pattern)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn proc(comm: &str, exe: Option<&str>) -> Proc {
        Proc {
            comm: comm.into(),
            exe: exe.map(str::to_string),
        }
    }

    #[test]
    fn names_paths_and_prefixes_match() {
        let ds = proc("ds_agent", Some("/opt/ds_agent/ds_agent"));
        assert!(matches("/opt/ds_agent/", &ds));
        assert!(matches("/opt/ds_agent/ds_agent", &ds));
        assert!(matches("ds_agent", &ds));
        assert!(
            !matches("/opt/ds_agent", &ds),
            "a directory without / is a file"
        );
        assert!(!matches("/usr/sbin/", &ds));
        assert!(!matches("ds_am", &ds));

        // comm is cut at 15 bytes; the executable's name is not
        let long = proc("very_long_daemo", Some("/usr/bin/very_long_daemon_name"));
        assert!(matches("very_long_daemon_name", &long));
        let no_exe = proc("very_long_daemo", None);
        assert!(matches("very_long_daemon_name", &no_exe));
        assert!(!matches("/usr/bin/", &no_exe));
        // renamed executable, same comm
        assert!(matches("clamd", &proc("clamd", Some("/tmp/x"))));
    }

    #[test]
    fn cmdline_and_deleted_marks() {
        assert_eq!(
            argv0(b"/usr/sbin/clamd\0--foreground\0").as_deref(),
            Some("/usr/sbin/clamd")
        );
        assert_eq!(argv0(b"clamd\0-c\0x"), None, "not a path");
        assert_eq!(argv0(b""), None);
        assert_eq!(
            strip_deleted("/usr/sbin/clamd (deleted)"),
            "/usr/sbin/clamd"
        );
        assert_eq!(strip_deleted("/usr/sbin/clamd"), "/usr/sbin/clamd");
    }

    #[test]
    fn scans_a_fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let add = |pid: &str, comm: &str| {
            std::fs::create_dir_all(p.join(pid)).unwrap();
            std::fs::write(p.join(pid).join("comm"), format!("{comm}\n")).unwrap();
        };
        add("1", "init");
        add("42", "ds_agent");
        std::os::unix::fs::symlink("/opt/ds_agent/ds_agent", p.join("42/exe")).unwrap();
        add("77", "clamd");
        std::fs::write(p.join("77/cmdline"), b"/usr/sbin/clamd\0--foreground\0").unwrap();
        add("self", "not-a-pid");
        std::fs::create_dir_all(p.join("99")).unwrap(); // ended while being read: no comm

        let far = Instant::now() + Duration::from_secs(60);
        let (mut procs, err) = scan(p, far);
        assert_eq!(err, None);
        procs.sort_by(|a, b| a.comm.cmp(&b.comm));
        assert_eq!(
            procs,
            [
                proc("clamd", Some("/usr/sbin/clamd")),
                proc("ds_agent", Some("/opt/ds_agent/ds_agent")),
                proc("init", None),
            ]
        );

        let (_, err) = scan(p, Instant::now() - Duration::from_secs(1));
        assert!(err.unwrap().contains("deadline"));
        let (none, err) = scan(&p.join("missing"), far);
        assert!(none.is_empty() && err.unwrap().contains("missing"));
    }
}
