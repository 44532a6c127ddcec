//! `siproam bench keepalive --accounts`: the endpoint's run and the
//! kernel-only floor both do the work they report (a small N, so the
//! figures themselves mean nothing here).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

use serde_json::Value;

fn bench(extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["--json", "bench", "keepalive", "--accounts", "20"])
        .args(["--interval", "1", "--seconds", "3"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"bench\""))
        .unwrap_or_else(|| {
            panic!(
                "no result; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: Value = serde_json::from_str(line).unwrap();
    assert!(out.status.success(), "{v}");
    v
}

#[test]
fn the_endpoint_run_keeps_every_flow_alive() {
    let v = bench(&[]);
    assert_eq!(v["registered"], 20, "{v}");
    assert_eq!(v["flows_failed"], 0, "{v}");
    // each account pings at least twice in 3 s at 80-100 % of 1 s
    assert!(v["pongs"].as_u64().unwrap() >= 20, "{v}");
    assert!(v["cpu_percent_of_one_core"].as_f64().is_some(), "{v}");
}

#[test]
fn the_floor_run_pings_every_connection_and_reads_the_pongs() {
    let v = bench(&["--floor"]);
    assert_eq!(v["mode"], "floor", "{v}");
    let (pings, pongs) = (v["pings"].as_u64().unwrap(), v["pongs"].as_u64().unwrap());
    // the first pings spread over one interval, then every 0.8-1 s
    assert!(pings >= 20, "{v}");
    // the registrar answers each; only the last tick's may be unread
    assert!(pongs > 0 && pongs <= pings, "{v}");
}
