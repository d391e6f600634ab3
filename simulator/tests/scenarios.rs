//! Scenario files: the shipped examples parse, and a broken file is reported with its name
//! and the problem.

use std::path::{Path, PathBuf};
use std::time::Duration;
use yunjian_simulator::fleet::Fleet;
use yunjian_simulator::profile::Profile;
use yunjian_simulator::{Scenario, ScenarioError};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

#[test]
fn every_shipped_scenario_parses_and_expands() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let fleet = Fleet::build(s.clone()).unwrap();
            assert_eq!(fleet.nodes().len(), s.node_count(), "{}", path.display());
            seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        ["ci-50.toml", "demo.toml", "idle-30d.toml", "load-10k.toml"]
    );
}

#[test]
fn shipped_scenarios_have_the_documented_shapes() {
    let demo = Scenario::load(&shipped("demo.toml")).unwrap();
    assert_eq!(demo.racks.len(), 3);
    assert!(demo
        .racks
        .iter()
        .all(|r| r.hosts == 6 && r.vms_per_host == 4));
    assert_eq!(demo.node_count(), 3 * 6 * 5);
    assert_eq!(demo.accel, 60.0);
    assert_eq!(demo.interval, Duration::from_secs(60));
    // 2025-03-03T07:00:00+08:00
    assert_eq!(demo.start_ms, Some(1_740_956_400_000));
    // the history the idle rule's 35-day look-back needs, at its 15-minute sample gap
    assert_eq!(demo.backfill, Some(Duration::from_secs(36 * 86_400)));
    assert_eq!(demo.backfill_interval, Duration::from_secs(15 * 60));
    let ci = Scenario::load(&shipped("ci-50.toml")).unwrap();
    assert_eq!(ci.backfill, None, "off unless asked for");
    assert_eq!(demo.racks[0].vms[1].profiles[&Profile::Steady], 3);
    let fleet = Fleet::build(demo).unwrap();
    let profiles: std::collections::HashSet<Profile> =
        fleet.nodes().iter().map(|n| n.workload.profile()).collect();
    assert_eq!(profiles.len(), 4, "the demo shows every profile");

    let ci = Scenario::load(&shipped("ci-50.toml")).unwrap();
    assert_eq!((ci.node_count(), ci.accel), (50, 1.0));
    assert_eq!(ci.interval, Duration::from_secs(1));

    let load = Scenario::load(&shipped("load-10k.toml")).unwrap();
    assert_eq!(load.node_count(), 10_000);
    let fleet = Fleet::build(load).unwrap();
    assert_eq!(fleet.nodes()[9_999].id, "load-h10000");
}

fn load_text(text: &str) -> (PathBuf, ScenarioError, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, text).unwrap();
    let err = Scenario::load(&path).unwrap_err();
    (path, err, dir)
}

#[test]
fn a_misspelt_key_is_named_with_the_file_and_line() {
    let (path, err, _dir) =
        load_text("seed = 1\n\n[[rack]]\nname = \"r1\"\nhosts = 2\nvm_per_host = 3\n");
    let msg = err.to_string();
    assert!(matches!(err, ScenarioError::Parse { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("vm_per_host"), "{msg}");
    assert!(msg.contains("line 6"), "{msg}");
}

#[test]
fn an_unknown_profile_lists_the_known_ones() {
    let (_, err, _dir) = load_text(
        "[[rack]]\nname = \"r1\"\nhosts = 1\nvms_per_host = 1\n[[rack.vm]]\nprofiles = { sleepy = 1 }\n",
    );
    let msg = err.to_string();
    assert!(msg.contains("sleepy") && msg.contains("diurnal"), "{msg}");
}

#[test]
fn a_bad_interval_and_a_duplicate_rack_are_explained() {
    let (_, err, _dir) = load_text("interval = \"10\"\n[[rack]]\nname = \"r\"\nhosts = 1\n");
    assert!(err.to_string().contains("no unit"), "{err}");

    let (path, err, _dir) =
        load_text("[[rack]]\nname = \"r\"\nhosts = 1\n[[rack]]\nname = \"r\"\nhosts = 2\n");
    let msg = err.to_string();
    assert!(matches!(err, ScenarioError::Invalid { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("rack \"r\"") && msg.contains("used by another rack"),
        "{msg}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let err = Scenario::load(Path::new("/nonexistent/estate.toml")).unwrap_err();
    assert!(matches!(err, ScenarioError::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/estate.toml"),
        "{err}"
    );
}

#[test]
fn inline_scenarios_use_defaults() {
    let s =
        Scenario::from_toml_str("[[rack]]\nname = \"x\"\nhosts = 3\nvms_per_host = 2\n").unwrap();
    assert_eq!(s, {
        let mut u = Scenario::uniform(1, 3, 2, 1);
        u.racks[0].name = "x".into();
        u
    });
}
