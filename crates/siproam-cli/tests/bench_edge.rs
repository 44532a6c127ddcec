//! `siproam bench edge`, small: every part does the work it reports, on
//! siproam's registrar and (when installed) on Kamailio with
//! interop/kamailio/bench.cfg. The figures mean nothing at this size; no
//! rate or latency is asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

use serde_json::Value;

mod common;
use common::have;

fn bench(extra: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args([
            "--json",
            "bench",
            "edge",
            "--bindings",
            "300",
            "--seconds",
            "1",
        ])
        .args([
            "--flows",
            "40",
            "--interval",
            "1",
            "--sources",
            "16",
            "--window",
            "16",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["bench"] == "edge")
        .collect()
}

fn check_server(results: &[Value], server: &str) {
    for part in ["register_udp", "register_udp_digest"] {
        let v = results
            .iter()
            .find(|v| v["server"] == server && v["part"] == part)
            .unwrap_or_else(|| panic!("no {server} {part} in {results:?}"));
        assert_eq!(v["bindings"], 300, "every AoR registered once: {v}");
        assert!(v["registers_per_second"].as_f64().unwrap() > 0.0, "{v}");
        assert_eq!(v["refused"], 0, "{v}");
        if part == "register_udp_digest" {
            assert!(v["challenged"].as_u64().unwrap() > 0, "{v}");
        }
    }
    let f = results
        .iter()
        .find(|v| v["server"] == server && v["part"] == "tcp_flows")
        .unwrap_or_else(|| panic!("no {server} tcp_flows in {results:?}"));
    assert_eq!(f["flows"], 40, "{f}");
    assert_eq!(f["flows_dropped"], 0, "{f}");
    assert!(
        f["pongs"].as_u64().unwrap() >= 40,
        "a pong on every flow: {f}"
    );
}

fn check_part(results: &[Value], part: &str) {
    let v = results
        .iter()
        .find(|v| v["part"] == part)
        .unwrap_or_else(|| panic!("no {part} in {results:?}"));
    assert_eq!(v["bindings"], 300, "every AoR registered once: {v}");
    assert!(v["registers_per_second"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["refused"], 0, "{v}");
}

#[test]
fn siproam_registrar_parts_all_run() {
    let results = bench(&["--no-kamailio", "--edge"]);
    check_server(&results, "siproam");
    check_part(&results, "register_udp_via_edge");
    assert!(results.iter().all(|v| v["server"] != "kamailio"));
}

#[test]
fn the_registrar_with_a_redis_store_is_measured() {
    if !have("redis-server") {
        return;
    }
    let results = bench(&["--no-kamailio", "--redis"]);
    check_part(&results, "register_udp_redis");
}

#[test]
fn kamailio_is_measured_the_same_way() {
    if !have("kamailio") || !have("kamcmd") {
        return;
    }
    let results = bench(&[]);
    check_server(&results, "siproam");
    check_server(&results, "kamailio");
    let summary = results.iter().find(|v| v["part"] == "summary").unwrap();
    assert!(
        summary["register_udp_vs_kamailio"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
}
