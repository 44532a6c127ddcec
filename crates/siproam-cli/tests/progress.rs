//! Long jobs show their progress on stderr as one updating line when
//! stderr is a terminal, and nothing when it is not (tests, CI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

const PROGRESS: &str = "accounts registered: ";

#[test]
fn a_captured_stderr_gets_no_progress() {
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["bench", "register", "--accounts", "300", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(PROGRESS) && !stderr.contains('\r'),
        "{stderr:?}"
    );
    let v: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(v["registered"], 300);
}

#[test]
fn a_terminal_gets_one_updating_line() {
    // `script` (util-linux) runs the job on a pseudo-terminal
    if !have("script") {
        eprintln!("skipped: no `script` command to give the job a terminal (util-linux)");
        return;
    }
    let job = format!(
        "{} bench register --accounts 300 --json",
        env!("CARGO_BIN_EXE_siproam")
    );
    let out = Command::new("script")
        .args(["-qec", &job, "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("\r\x1b[2K{PROGRESS}0/300 (0%)")),
        "{text:?}"
    );
    // the line is cleared before the results, which are one JSON line
    let results = text.rsplit("\r\x1b[2K").next().unwrap();
    let v: Value = serde_json::from_str(results.trim()).unwrap();
    assert_eq!(v["registered"], 300);
    // one line updated in place: no newline before the results
    let before = &text[..text.len() - results.len()];
    assert!(!before.contains('\n'), "{before:?}");
}
