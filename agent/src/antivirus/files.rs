//! Files a product leaves on the system: unit files, install paths, signature files and a
//! version file. Every path is absolute in the profile and read under the configured root.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;
use yunjian_protocol::AntivirusUnit;

/// Where unit files are installed, most specific first (relative to the root).
pub const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];
/// Enabled units are linked from `*.wants/` directories here.
pub const WANTS_PARENT: &str = "etc/systemd/system";

/// `path` (absolute, as written in a profile) under `root`.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The first of `units` whose unit file exists, and whether a `*.wants/` directory links it.
/// Read from the files only: these machines run no systemd to ask.
pub fn unit(root: &Path, units: &[String]) -> Option<AntivirusUnit> {
    let name = units.iter().find(|u| {
        UNIT_DIRS
            .iter()
            .any(|d| root.join(d).join(u.as_str()).symlink_metadata().is_ok())
    })?;
    let enabled = std::fs::read_dir(root.join(WANTS_PARENT))
        .map(|dirs| {
            dirs.flatten().any(|d| {
                d.file_name().to_string_lossy().ends_with(".wants")
                    && d.path().join(name).symlink_metadata().is_ok()
            })
        })
        .unwrap_or(false);
    Some(AntivirusUnit {
        name: name.clone(),
        enabled,
    })
}

/// The profile paths that exist under `root`.
pub fn existing(root: &Path, paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| under(root, p).symlink_metadata().is_ok())
        .cloned()
        .collect()
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` any one.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // classic greedy match with one backtrack point for the last `*`
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Modification time (Unix seconds) of the newest file matching any of `globs`. A glob has
/// wildcards in its file name only (`/var/lib/clamav/*.cvd`). A missing directory matches
/// nothing; other read errors are returned beside the result.
pub fn newest(root: &Path, globs: &[String]) -> (Option<u64>, Vec<String>) {
    let mut best: Option<u64> = None;
    let mut errors = Vec::new();
    for glob in globs {
        let (dir, pattern) = glob.rsplit_once('/').unwrap_or(("", glob.as_str()));
        let dir = under(root, dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            if !glob_match(pattern, &entry.file_name().to_string_lossy()) {
                continue;
            }
            let secs = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            best = best.max(secs);
        }
    }
    (best, errors)
}

/// The first non-empty line of a version file, at most 64 characters.
pub fn version(root: &Path, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(under(root, file)).ok()?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn globs_match_file_names() {
        assert!(glob_match("*.cvd", "main.cvd"));
        assert!(glob_match("*.cvd", ".cvd"));
        assert!(!glob_match("*.cvd", "main.cvd.tmp"));
        assert!(glob_match("daily.c?d", "daily.cld"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("lpt$vpn.*", "lpt$vpn.123"));
        assert!(!glob_match("x", ""));
        assert!(glob_match("", ""));
        assert!(
            glob_match("*x", "*ax"),
            "a `*` in the name is an ordinary character"
        );
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "lib/systemd/system",
            "etc/systemd/system/multi-user.target.wants",
            "var/lib/clamav",
            "opt/ds_agent",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        dir
    }

    #[test]
    fn unit_files_and_their_wants_links() {
        let dir = tree();
        let r = dir.path();
        let units = vec!["ds_agent.service".to_string()];
        assert_eq!(unit(r, &units), None);
        std::fs::write(r.join("lib/systemd/system/ds_agent.service"), "[Unit]\n").unwrap();
        assert_eq!(
            unit(r, &units),
            Some(AntivirusUnit {
                name: "ds_agent.service".into(),
                enabled: false
            })
        );
        std::os::unix::fs::symlink(
            "/lib/systemd/system/ds_agent.service",
            r.join("etc/systemd/system/multi-user.target.wants/ds_agent.service"),
        )
        .unwrap();
        assert!(unit(r, &units).unwrap().enabled);
    }

    #[test]
    fn newest_signature_file_and_version() {
        let dir = tree();
        let r = dir.path();
        let db = r.join("var/lib/clamav");
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let new = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_086_400);
        for (name, t) in [("main.cvd", old), ("daily.cld", new), ("other.txt", new)] {
            let f = std::fs::File::create(db.join(name)).unwrap();
            f.set_modified(t).unwrap();
        }
        std::fs::File::create(db.join("stale.hdb"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let globs = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            newest(r, &globs(&["/var/lib/clamav/*.cvd"])),
            (Some(1_700_000_000), vec![])
        );
        assert_eq!(
            newest(
                r,
                &globs(&["/var/lib/clamav/*.cvd", "/var/lib/clamav/*.cld"])
            ),
            (Some(1_700_086_400), vec![])
        );
        assert_eq!(newest(r, &globs(&["/nowhere/*.cvd"])), (None, vec![]));

        assert_eq!(
            existing(r, &globs(&["/opt/ds_agent", "/opt/x"])),
            ["/opt/ds_agent"]
        );
        std::fs::write(r.join("opt/ds_agent/version"), "\n  20.0.1-3180 \nx\n").unwrap();
        assert_eq!(
            version(r, "/opt/ds_agent/version").as_deref(),
            Some("20.0.1-3180")
        );
        assert_eq!(version(r, "/opt/ds_agent/none"), None);
    }
}
