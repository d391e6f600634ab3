//! The dpkg database (`{root}/var/lib/dpkg/status`): which of a profile's packages is present.

use yunjian_protocol::{AntivirusPackage, PackageState};

/// Where dpkg keeps its status file, relative to the root.
pub const STATUS: &str = "var/lib/dpkg/status";

/// The first of `wanted` present in the text of a dpkg status file, in the order of `wanted`.
///
/// A package counts as present when its `Status:` is `installed` ([`PackageState::Installed`])
/// or in the middle of an installation or upgrade (`half-installed`, `unpacked`,
/// `half-configured`, `triggers-awaited`, `triggers-pending`: [`PackageState::Changing`]).
/// `config-files` (removed, configuration kept) and `not-installed` count as absent, as does a
/// package without a status line.
pub fn find(status: &str, wanted: &[String]) -> Option<AntivirusPackage> {
    let mut best: Option<(usize, AntivirusPackage)> = None;
    for stanza in stanzas(status) {
        let Some(rank) = wanted.iter().position(|w| *w == stanza.package) else {
            continue;
        };
        let Some(state) = stanza.status.and_then(package_state) else {
            continue;
        };
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((
                rank,
                AntivirusPackage {
                    name: stanza.package.to_string(),
                    version: stanza.version.unwrap_or_default().to_string(),
                    state,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

/// The third word of a `Status:` value (`want flag status`), as a presence.
fn package_state(status: &str) -> Option<PackageState> {
    match status.split_ascii_whitespace().nth(2)? {
        "installed" => Some(PackageState::Installed),
        "half-installed" | "unpacked" | "half-configured" | "triggers-awaited"
        | "triggers-pending" => Some(PackageState::Changing),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Stanza<'a> {
    package: &'a str,
    status: Option<&'a str>,
    version: Option<&'a str>,
}

/// The paragraphs of a status file with the three fields this module reads. Continuation
/// lines (starting with a space or tab) belong to the field above and are skipped.
fn stanzas(text: &str) -> impl Iterator<Item = Stanza<'_>> {
    let mut lines = text.lines().peekable();
    std::iter::from_fn(move || loop {
        let mut stanza = Stanza::default();
        let mut any = false;
        for line in lines.by_ref() {
            if line.trim().is_empty() {
                if any {
                    break;
                }
                continue;
            }
            any = true;
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                let value = value.trim();
                match key {
                    "Package" => stanza.package = value,
                    "Status" => stanza.status = Some(value),
                    "Version" => stanza.version = Some(value),
                    _ => {}
                }
            }
        }
        if !any {
            return None;
        }
        if !stanza.package.is_empty() {
            return Some(stanza);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_TEXT: &str = "\
Package: adduser
Status: install ok installed
Version: 3.134

Package: clamav-daemon
Status: install ok installed
Priority: optional
Description: anti-virus utility for Unix - scanner daemon
 Clam AntiVirus is an anti-virus toolkit for Unix.
 Package: not-a-field
Version: 1.4.6+dfsg-0+deb12u1

Package: ds-agent
Status: install reinstreq half-installed
Version: 20.0.1-3180

Package: old-av
Status: deinstall ok config-files
Version: 2.0
";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn installed_and_upgrading_packages_are_present() {
        let clam = find(STATUS_TEXT, &names(&["clamav-daemon"])).unwrap();
        assert_eq!(clam.name, "clamav-daemon");
        assert_eq!(clam.version, "1.4.6+dfsg-0+deb12u1");
        assert_eq!(clam.state, PackageState::Installed);
        // an upgrade in progress is still the package being there
        let ds = find(STATUS_TEXT, &names(&["ds_agent", "ds-agent"])).unwrap();
        assert_eq!(
            (ds.name.as_str(), ds.state),
            ("ds-agent", PackageState::Changing)
        );
    }

    #[test]
    fn removed_unknown_and_continuation_lines_are_absent() {
        assert_eq!(find(STATUS_TEXT, &names(&["old-av"])), None);
        assert_eq!(find(STATUS_TEXT, &names(&["not-a-field"])), None);
        assert_eq!(find(STATUS_TEXT, &names(&["nothing"])), None);
        assert_eq!(find("", &names(&["adduser"])), None);
        assert_eq!(
            find("Package: x\nVersion: 1\n", &names(&["x"])),
            None,
            "no status line"
        );
    }

    #[test]
    fn the_first_wanted_name_wins() {
        let both = names(&["clamav-daemon", "adduser"]);
        assert_eq!(find(STATUS_TEXT, &both).unwrap().name, "clamav-daemon");
        let reversed = names(&["adduser", "clamav-daemon"]);
        assert_eq!(find(STATUS_TEXT, &reversed).unwrap().name, "adduser");
    }

    #[test]
    fn every_dpkg_state_is_classified() {
        let state = |s: &str| package_state(&format!("install ok {s}"));
        assert_eq!(state("installed"), Some(PackageState::Installed));
        for s in [
            "half-installed",
            "unpacked",
            "half-configured",
            "triggers-awaited",
            "triggers-pending",
        ] {
            assert_eq!(state(s), Some(PackageState::Changing), "{s}");
        }
        assert_eq!(state("config-files"), None);
        assert_eq!(state("not-installed"), None);
        assert_eq!(package_state("install ok"), None);
    }
}
