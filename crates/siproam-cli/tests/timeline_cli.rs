//! `siproam timeline LOG --svg FILE` on an agent's `--json` log (a real
//! one, checked in: Alice calling a peer through `siproam registrar`, her
//! address moving 127.0.0.2 → 127.0.0.3): the SVG parsed back holds each
//! stage with its time; a malformed line is named and skipped; a log with
//! nothing to draw exits 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{svg_groups, temp_dir};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/agent-handoff.jsonl")
}

fn timeline(log: &Path, svg: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args([
            "timeline",
            log.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

fn ms(g: &(HashMap<String, String>, String), key: &str) -> f64 {
    g.0[key].parse().unwrap()
}

/// What every drawing of the sample must hold.
fn check_sample_drawing(svg: &str) {
    let parties: Vec<String> = svg_groups(svg, "party").into_iter().map(|g| g.1).collect();
    assert_eq!(parties, vec!["Alice", "Registrar/proxy", "Peer"]);
    // the change: the band, placed by the core's clock (started 17 ms
    // before the agent printed it)
    let bands = svg_groups(svg, "change");
    assert_eq!(bands.len(), 1);
    assert_eq!(bands[0].0["data-start-ms"], "2514.6");
    assert_eq!(bands[0].0["data-end-ms"], "2538.5");
    assert!(bands[0].1.contains("127.0.0.3:41320") && bands[0].1.contains("ok in 23.9 ms"));
    let exchanges = svg_groups(svg, "exchange");
    let find = |req: &str, after: f64| {
        exchanges
            .iter()
            .find(|g| g.0["data-request"] == req && ms(g, "data-sent-ms") >= after)
            .unwrap_or_else(|| panic!("no {req} after {after}"))
    };
    // the first REGISTER, the INVITE, the change's REGISTER and re-INVITE
    let first = find("REGISTER", 0.0);
    assert_eq!(first.0["data-answer"], "200");
    assert!(ms(first, "data-answered-ms") < 100.0);
    let invite = find("INVITE", 0.0);
    assert_eq!(
        (
            invite.0["data-answer"].as_str(),
            invite.0["data-ms"].as_str()
        ),
        ("200", "6.0")
    );
    let register = find("REGISTER", 2500.0);
    assert_eq!(register.0["data-ms"], "18.1", "elapsed 18.219 - 0.144");
    assert!(register.1.contains("REGISTER") && register.1.contains("200 (18.1 ms)"));
    let refresh = find("re-INVITE", 2500.0);
    assert_eq!(refresh.0["data-ms"], "7.4");
    assert!(refresh.1.contains("2xx (7.4 ms)"));
    // the media: a bar per direction, the gap on what Alice received
    let media = svg_groups(svg, "media");
    let dirs: Vec<&str> = media
        .iter()
        .map(|g| g.0["data-direction"].as_str())
        .collect();
    assert_eq!(dirs, vec!["Peer → Alice", "Alice → Peer"]);
    assert_eq!(media[0].0["data-packets"], "150");
    assert_eq!(media[1].0["data-packets"], "151");
    let gaps = svg_groups(svg, "gap");
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].0["data-max-gap-ms"], "31.5");
    assert!(media[0].1.contains("longest gap 31.5 ms"));
    let notes: Vec<String> = svg_groups(svg, "note").into_iter().map(|g| g.1).collect();
    assert!(
        notes.iter().any(|n| n == "media moved to 127.0.0.3:55978"),
        "{notes:?}"
    );
}

#[test]
fn the_timeline_of_an_agent_log_draws_its_hand_off() {
    let dir = temp_dir("timeline-sample");
    let svg = dir.join("alice.svg");
    let out = timeline(&sample(), &svg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_sample_drawing(&std::fs::read_to_string(&svg).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_malformed_line_is_named_and_skipped() {
    let dir = temp_dir("timeline-malformed");
    let text = std::fs::read_to_string(sample()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(4, "{\"t_ms\": 1016.8, \"event\": \"call\"");
    lines.push("[ 4729.0 ms] event=demo state=passed");
    let log = dir.join("broken.jsonl");
    std::fs::write(&log, lines.join("\n")).unwrap();
    let svg = dir.join("broken.svg");
    let out = timeline(&log, &svg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().collect();
    let n = lines.len();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains(":5: not JSON") && warnings[0].ends_with("line skipped"),
        "{stderr}"
    );
    assert!(warnings[1].contains(&format!(":{n}: not JSON")), "{stderr}");
    // the rest is drawn as before
    check_sample_drawing(&std::fs::read_to_string(&svg).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_log_with_nothing_to_draw_exits_1() {
    let dir = temp_dir("timeline-empty");
    let log = dir.join("nothing.jsonl");
    std::fs::write(
        &log,
        "{\"t_ms\":1.0,\"event\":\"listening\",\"transport\":\"udp\",\"address\":\"127.0.0.1:5060\"}\nnot json at all\n",
    )
    .unwrap();
    let svg = dir.join("nothing.svg");
    let out = timeline(&log, &svg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(":2: not JSON"), "{stderr}");
    assert!(stderr.contains("nothing to draw"), "{stderr}");
    assert!(!svg.exists());
    // a log that cannot be read: 1 with the reason
    let out = timeline(&dir.join("absent.jsonl"), &svg);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.jsonl"));
    let _ = std::fs::remove_dir_all(dir);
}
