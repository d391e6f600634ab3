//! `yunjian-aggregator user add` / `user list`: the first administrator and the users an ops
//! script adds, created in the database through the identity service.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(data_dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_yunjian-aggregator"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn users_are_added_once_with_a_strong_password_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let out = run(
        d,
        &[
            "user",
            "add",
            "--name",
            "admin",
            "--role",
            "admin",
            "--display-name",
            "管理员",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("已创建用户 admin（管理员，系统管理员）"),
        "{said}"
    );
    let password = said
        .lines()
        .find_map(|l| l.split_once("初始密码（只显示这一次，请登录后修改）："))
        .map(|(_, p)| p.trim().to_string())
        .expect("a generated password is shown");
    assert_eq!(password.chars().count(), 16, "{password}");

    let out = run(
        d,
        &[
            "user",
            "add",
            "--name",
            "cz-li",
            "--role",
            "unit",
            "--unit",
            "市财政局",
            "--password-stdin",
        ],
        Some("Caizheng-2026!\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("初始密码"),
        "a given password is not echoed"
    );

    for (args, stdin, expected) in [
        (
            vec!["--name", "admin", "--role", "ops"],
            None,
            "用户 admin 已存在",
        ),
        (
            vec!["--name", "ops-1", "--role", "ops", "--password-stdin"],
            Some("short\n"),
            "密码不符合要求：至少 10 个字符",
        ),
        (
            vec!["--name", "cz-2", "--role", "unit"],
            None,
            "使用单位角色（unit）的用户必须指定所属单位",
        ),
        (
            vec!["--name", "x", "--role", "root"],
            None,
            "角色 \"root\" 不存在",
        ),
        (
            vec!["--name", "王局长", "--role", "authority"],
            None,
            "登录名 \"王局长\" 无效",
        ),
    ] {
        let mut all = vec!["user", "add"];
        all.extend(args);
        let out = run(d, &all, stdin);
        assert!(!out.status.success(), "{all:?} must be refused");
        assert!(
            text(&out.stderr).contains(expected),
            "{all:?}: {}",
            text(&out.stderr)
        );
    }

    let out = run(d, &["user", "list"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines,
        [
            "admin\t管理员\tadmin\t-\t正常",
            "cz-li\tcz-li\tunit\t市财政局\t正常",
        ]
    );
}
