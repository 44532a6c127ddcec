//! `siproam bench soak`, short: ten detected hand-offs in the namespace
//! topology (five break-before-make, five make-before-break) with a call
//! up. The full 1,000-hand-off soak runs outside CI; this checks that the
//! bench reports every figure and that no call and no binding was lost.
//! No timing is asserted.
//!
//! Needs root (namespaces, veth): without it the test says it is skipped;
//! CI (root, SIPROAM_REQUIRE_INTEROP set) requires it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_soak_reports_every_figure_and_loses_no_call_and_no_binding() {
    if !can_build_namespaces() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["bench", "soak", "--handoffs", "10", "--json"])
        .current_dir(repo())
        .output()
        .expect("siproam bench soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "bench" && v["bench"] == "soak")
        .unwrap_or_else(|| panic!("no soak summary in {stdout:?}; stderr: {stderr}"));
    // every figure is there, and is a number
    for field in [
        "handoffs_requested",
        "handoffs",
        "break_before_make",
        "make_before_break",
        "calls_lost",
        "bindings_lost",
        "undetected",
        "seconds",
    ] {
        assert!(summary[field].is_number(), "{field} in {summary}");
    }
    for field in ["p50", "p95", "max", "total"] {
        assert!(
            summary["rtp_lost_per_handoff"][field].is_number(),
            "rtp_lost_per_handoff.{field} in {summary}"
        );
    }
    for group in ["fds", "rss_bytes"] {
        for field in ["start", "at_handoff", "at_mark", "end", "growth_pct"] {
            assert!(
                summary[group][field].is_number(),
                "{group}.{field} in {summary}"
            );
        }
        assert!(summary[group]["end"].as_u64().unwrap() > 0, "{summary}");
        assert!(summary[group]["at_mark"].as_u64().unwrap() > 0, "{summary}");
    }
    assert!(summary["call_loss_reasons"].is_object(), "{summary}");
    assert!(summary["flat"].is_boolean(), "{summary}");
    // all ten ran, alternating, and nothing was lost
    assert_eq!(summary["handoffs"], 10, "{summary}");
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["break_before_make"], 5, "{summary}");
    assert_eq!(summary["make_before_break"], 5, "{summary}");
    assert_eq!(summary["undetected"], 0, "every change detected: {summary}");
    assert_eq!(summary["calls_lost"], 0, "{summary}; stderr: {stderr}");
    assert_eq!(summary["bindings_lost"], 0, "{summary}; stderr: {stderr}");
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
}
