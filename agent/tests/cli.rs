//! The built `yunjian-agent` binary, as an operator runs it.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use yunjian_agent::collect::REGISTRY;
use yunjian_agent::config::AgentConfig;

/// The binary with a clean `YUNJIAN_AGENT_*` environment and a fixed node id.
fn agent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_yunjian-agent"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("YUNJIAN_AGENT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

fn once_json(cmd: &mut Command) -> Value {
    let out = cmd.arg("--once").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn once_prints_a_report_with_memory_and_disks() {
    let json = once_json(agent().args(["--node-id", "cli-test"]));
    let report = &json["report"];
    assert!(report["mem"]["total_kib"].as_u64().unwrap() > 0, "{json:#}");
    let disks = report["disks"].as_array().unwrap();
    assert!(!disks.is_empty(), "{json:#}");
    assert!(disks.iter().any(|d| d["mount"] == "/"));
    assert_eq!(report["failed"].as_array().unwrap().len(), 0, "{json:#}");

    let collectors = json["collectors"].as_array().unwrap();
    assert_eq!(collectors.len(), REGISTRY.len());
    for c in collectors {
        assert_eq!(c["ok"], true, "{c}");
        assert!(c["duration_us"].is_u64() && c["error"].is_null(), "{c}");
    }
    assert!(!json["inventory"]["hostname"].as_str().unwrap().is_empty());
    assert!(json["inventory"]["disks"]
        .as_array()
        .is_some_and(|d| !d.is_empty()));
}

#[test]
fn print_default_config_parses_back_to_the_defaults() {
    let out = agent().arg("print-default-config").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    assert_eq!(
        AgentConfig::from_toml(&text, &path).unwrap(),
        AgentConfig::default()
    );
    // And the binary itself accepts it.
    let json = once_json(agent().arg("--config").arg(&path).args(["--node-id", "n1"]));
    assert!(json["report"]["mem"]["total_kib"].as_u64().unwrap() > 0);
}

#[test]
fn an_unknown_key_fails_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "role = \"host\"\n\n[mqtt]\nhots = \"broker\"\n");
    let out = agent()
        .arg("--config")
        .arg(&path)
        .arg("--once")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown field `hots`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_config_file_given_explicitly_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = agent()
        .env("YUNJIAN_AGENT_CONFIG", &missing)
        .arg("--once")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn command_line_beats_environment_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "role = \"guest\"\nrack = \"from-file\"\n");
    let role_and_rack = |json: Value| {
        let inv = &json["inventory"];
        (inv["role"].clone(), inv["rack"].clone())
    };
    let with = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = agent();
        cmd.arg("--config").arg(&path).args(["--node-id", "n1"]);
        cmd.envs(env.iter().copied()).args(args);
        role_and_rack(once_json(&mut cmd))
    };
    let env = [
        ("YUNJIAN_AGENT_ROLE", "host"),
        ("YUNJIAN_AGENT_RACK", "from-env"),
    ];
    assert_eq!(
        with(&[], &[]),
        (Value::from("Guest"), Value::from("from-file"))
    );
    assert_eq!(
        with(&env, &[]),
        (Value::from("Host"), Value::from("from-env"))
    );
    assert_eq!(
        with(&env, &["--rack", "from-cli", "--role", "guest"]),
        (Value::from("Guest"), Value::from("from-cli"))
    );
}

#[test]
fn run_without_a_key_says_how_to_enroll() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    let out = agent()
        .args(["--node-id", "rack1-host07", "--key-file"])
        .arg(&key)
        .arg("run")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let expected = format!(
        "no key at {k}: enroll this node with `yunjian-aggregator enroll rack1-host07 --out {k}`",
        k = key.display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

#[test]
fn bad_values_on_the_command_line_are_refused() {
    let out = agent().args(["--interval", "10"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid duration \"10\""),
        "{}",
        stderr(&out)
    );
    let out = agent()
        .args(["--node-id", "n1", "--interval", "100ms", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("shorter than 250ms"),
        "{}",
        stderr(&out)
    );
}
