//! Static facts about the node ([`Inventory`]): sent after every connect and when they change.
//!
//! Best effort: a fact that cannot be read is left empty (`machine_id`, `os`) or `None`
//! (`smbios_uuid`, readable by root only) rather than holding the others back.

use super::filesystem;
use super::memory::parse_meminfo;
use super::network::parse_net_dev;
use super::Paths;
use std::path::Path;
use sysinfo::{CpuRefreshKind, System};
use yunjian_protocol::{DiskInfo, Inventory, Role};

/// Gather the inventory. `rack` comes from the config.
pub fn build(paths: &Paths, role: Role, rack: Option<&str>) -> Inventory {
    let uts = nix::sys::utsname::uname().ok();
    let uts_field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut system = System::new();
    system.refresh_cpu_list(CpuRefreshKind::nothing());
    let cpus = system.cpus();

    Inventory {
        hostname: uts_field(|u| u.nodename()),
        role,
        os: read(&paths.etc.join("os-release"))
            .and_then(|text| os_pretty_name(&text))
            .unwrap_or_else(|| uts_field(|u| u.sysname())),
        kernel: uts_field(|u| u.release()),
        cpu_model: cpus
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default(),
        cpu_cores: u16::try_from(cpus.len()).unwrap_or(u16::MAX),
        mem_total_kib: read(&paths.proc.join("meminfo"))
            .and_then(|text| parse_meminfo(&text).ok())
            .map_or(0, |m| m.total_kib),
        disks: disks(&paths.proc),
        nics: nics(&paths.proc),
        machine_id: read(&paths.etc.join("machine-id"))
            .map(|id| id.trim().to_string())
            .unwrap_or_default(),
        smbios_uuid: read(&paths.sys.join("class/dmi/id/product_uuid"))
            .map(|uuid| uuid.trim().to_ascii_lowercase())
            .filter(|uuid| !uuid.is_empty()),
        rack: rack.map(str::to_string),
    }
}

/// The kernel's host name (`uname -n`), if it can be read.
pub fn hostname() -> Option<String> {
    let uts = nix::sys::utsname::uname().ok()?;
    Some(uts.nodename().to_string_lossy().into_owned())
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .map_err(
            |e| tracing::debug!(path = %path.display(), error = %e, "inventory source unreadable"),
        )
        .ok()
}

fn disks(proc: &Path) -> Vec<DiskInfo> {
    let Ok(mounts) = filesystem::list(proc) else {
        return Vec::new();
    };
    mounts
        .into_iter()
        .filter_map(|m| {
            let (total_kib, _) = filesystem::space_kib(&m.mount).ok()?;
            Some(DiskInfo {
                mount: m.mount,
                fs_type: m.fs_type,
                total_kib,
            })
        })
        .collect()
}

fn nics(proc: &Path) -> Vec<String> {
    let Some(text) = read(&proc.join("net/dev")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parse_net_dev(&text)
        .filter_map(Result::ok)
        .map(|c| c.name)
        .filter(|name| *name != "lo")
        .map(str::to_string)
        .collect();
    names.sort_unstable();
    names
}

/// The OS name from the text of `os-release`: `PRETTY_NAME`, else `NAME VERSION`.
pub fn os_pretty_name(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|line| line.trim().split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| unquote(v.trim()))
            .filter(|v| !v.is_empty())
    };
    value("PRETTY_NAME").or_else(|| {
        let name = value("NAME")?;
        Some(match value("VERSION") {
            Some(version) => format!("{name} {version}"),
            None => name,
        })
    })
}

/// Shell-style quoting as os-release(5) allows: `"..."` with backslash escapes, or `'...'`.
fn unquote(v: &str) -> String {
    if let Some(inner) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_string();
    }
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_name_wins_and_quotes_are_removed() {
        let debian = "\
PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"
NAME=\"Debian GNU/Linux\"
VERSION_ID=\"12\"
VERSION=\"12 (bookworm)\"
ID=debian
";
        assert_eq!(
            os_pretty_name(debian).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            os_pretty_name("NAME='Kylin'\nVERSION=V10\n").as_deref(),
            Some("Kylin V10")
        );
        assert_eq!(
            os_pretty_name("PRETTY_NAME=\"say \\\"hi\\\"\"").as_deref(),
            Some("say \"hi\"")
        );
        assert_eq!(os_pretty_name("NAME=\nID=x\n"), None);
        assert_eq!(
            os_pretty_name("NAME=openEuler\n").as_deref(),
            Some("openEuler")
        );
    }

    #[test]
    fn reads_identity_facts_from_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
            etc: dir.path().join("etc"),
        };
        let dmi = paths.sys.join("class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        std::fs::create_dir_all(paths.proc.join("net")).unwrap();
        std::fs::create_dir_all(&paths.etc).unwrap();
        std::fs::write(paths.etc.join("os-release"), "PRETTY_NAME=\"Fake OS 1\"\n").unwrap();
        std::fs::write(paths.etc.join("machine-id"), "0123456789abcdef\n").unwrap();
        std::fs::write(
            dmi.join("product_uuid"),
            "4C4C4544-0042-3510-8058-B4C04F384D32\n",
        )
        .unwrap();
        std::fs::write(paths.proc.join("meminfo"), "MemTotal: 2048 kB\n").unwrap();
        std::fs::write(paths.proc.join("mounts"), "/dev/fake / ext4 rw 0 0\n").unwrap();
        std::fs::write(
            paths.proc.join("net/dev"),
            "h\nh\nlo: 1 0 0 0 0 0 0 0 1\neth1: 1 0 0 0 0 0 0 0 1\neth0: 1 0 0 0 0 0 0 0 1\n",
        )
        .unwrap();

        let inv = build(&paths, Role::Guest, Some("r7"));
        assert_eq!(inv.os, "Fake OS 1");
        assert_eq!(inv.machine_id, "0123456789abcdef");
        assert_eq!(
            inv.smbios_uuid.as_deref(),
            Some("4c4c4544-0042-3510-8058-b4c04f384d32")
        );
        assert_eq!(inv.mem_total_kib, 2048);
        assert_eq!(inv.nics, ["eth0", "eth1"]);
        assert_eq!(inv.disks.len(), 1);
        assert_eq!(
            (inv.disks[0].mount.as_str(), inv.disks[0].fs_type.as_str()),
            ("/", "ext4")
        );
        assert_eq!((inv.role, inv.rack.as_deref()), (Role::Guest, Some("r7")));
        assert_eq!(inv.hostname, hostname().unwrap());
        assert!(inv.cpu_cores >= 1);
    }

    #[test]
    fn missing_facts_are_empty_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            proc: dir.path().into(),
            sys: dir.path().into(),
            etc: dir.path().into(),
        };
        let inv = build(&paths, Role::Host, None);
        assert_eq!(inv.machine_id, "");
        assert_eq!(inv.smbios_uuid, None);
        assert_eq!(inv.os, "Linux", "falls back to the kernel's name");
        assert!(inv.disks.is_empty() && inv.nics.is_empty());
        assert_eq!(inv.mem_total_kib, 0);
    }
}
