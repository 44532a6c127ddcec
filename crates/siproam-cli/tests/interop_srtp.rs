//! SRTP (SDES, RFC 4568) interop with baresip 1.0.0 and its `srtp.so`, on
//! loopback (and, as root, across the hand-off namespaces):
//! - `siproam call --srtp mandatory` calls baresip (`mediaenc=srtp-mand`)
//!   and each hears the other's tone; the `media` event's `srtp` names the
//!   suite baresip enabled;
//! - baresip calls `siproam agent --srtp mandatory|optional|off`;
//! - `--srtp optional` calling a plain baresip falls back to RTP;
//! - a hand-off (`ip-change`) in the middle of an SRTP call: media still
//!   flows both ways, baresip logs no SRTP error;
//! - refusals: mandatory SRTP towards a plain baresip fails naming SRTP,
//!   baresip's mandatory SRTP towards `--srtp off` gets 488.
//!
//! What baresip 1.0.0 does (seen here, see `interop/baresip/README.md`):
//! it offers one `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:…` line (in
//! RTP/SAVP with `srtp-mand`, RTP/AVP with `srtp`); as answerer it takes
//! the first offered suite it knows (AES_CM_128_HMAC_SHA1_80/32,
//! AEAD_AES_128_GCM, AEAD_AES_256_GCM); it does not re-key on a re-INVITE
//! (a new key there makes every later packet fail its authentication), so
//! a re-offer must keep the crypto line.
//!
//! Peers come from Debian (`interop/install.sh`); without baresip or its
//! srtp module a test says why it is skipped, and with
//! `SIPROAM_REQUIRE_INTEROP=1` (CI) it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::baresip::{parse_audio_debug, Baresip, BaresipOptions, RtpStats};
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The suites baresip 1.0.0's srtp module knows (and siproam offers some
/// of).
const SUITES: [&str; 4] = [
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
];

/// The one suite baresip 1.0.0 offers.
const BARESIP_OFFERS: &str = "AES_CM_128_HMAC_SHA1_80";

/// Where Debian's baresip keeps its srtp module.
const SRTP_MODULE: &str = "/usr/lib/baresip/modules/srtp.so";

/// True when baresip and its srtp module are installed; otherwise says why
/// the test is skipped, or fails when `SIPROAM_REQUIRE_INTEROP=1` (CI).
fn baresip_with_srtp() -> bool {
    if !have("baresip") {
        return false;
    }
    if Path::new(SRTP_MODULE).exists() {
        return true;
    }
    let why = format!("baresip has no srtp module ({SRTP_MODULE} is missing)");
    if std::env::var("SIPROAM_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
        panic!("required interop peer missing: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// A baresip answering at once as `carol` with a `freq` Hz tone,
/// recording its calls, with `o`'s SRTP; its URI.
fn carol(dir: &Path, freq: u32, o: &BaresipOptions) -> (Baresip, String) {
    let (port, ctrl) = (free_port(1), free_port(0));
    let freq = freq.to_string();
    let bs = Baresip::start_with(
        port,
        ctrl,
        &dir.join("bs"),
        &[
            "--auto-answer",
            "--user",
            "carol",
            "--freq",
            &freq,
            "--record",
        ],
        o,
    );
    (bs, format!("sip:carol@127.0.0.1:{port}"))
}

/// `siproam call URI` from Alice on 127.0.0.2 with `--srtp POLICY`,
/// playing 1000 Hz and recording what it hears to `wav`.
fn alice_calls(uri: &str, policy: &str, wav: &Path) -> Proc {
    Proc::spawn(&[
        "call",
        uri,
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--listen",
        "udp:127.0.0.2:0",
        "--srtp",
        policy,
        "--play",
        "tone:1000",
        "--record",
        wav.to_str().unwrap(),
    ])
}

/// The `srtp` field of a `media` event: the suite, or `None` for plain RTP
/// (`null`). Fails when the field is absent altogether.
fn srtp_of(m: &Value) -> Option<String> {
    assert!(
        m.get("srtp").is_some(),
        "the media event has no `srtp` field: {m}"
    );
    m["srtp"].as_str().map(str::to_owned)
}

/// A `media` event with at least `n` packets received.
fn media_with(p: &Proc, what: &str, n: u64) -> Value {
    p.wait_for(what, |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) >= n
    })
}

/// What baresip's SRTP did, for failure messages: its suite, the crypto
/// lines of its log, its SRTP errors.
fn srtp_story(bs: &Baresip) -> String {
    format!(
        "baresip's suite {:?}; a=crypto lines {:#?}; SRTP errors {:#?}",
        bs.srtp_suite(),
        bs.crypto_lines(),
        bs.srtp_errors()
    )
}

/// baresip's stream is SRTP, with its `mediaenc` `menc`.
fn assert_secure(stats: &RtpStats, menc: &str, bs: &Baresip) {
    assert!(
        stats.secure && stats.menc == menc,
        "baresip's stream is not secure with {menc}: {stats:?}; {}",
        srtp_story(bs)
    );
}

/// No SRTP error in baresip's log: every packet of ours passed its
/// authentication and replay check.
fn assert_no_srtp_errors(bs: &Baresip) {
    assert!(bs.srtp_errors().is_empty(), "{}", srtp_story(bs));
}

/// baresip's recording of what it received in its last call holds our
/// `freq` Hz tone.
fn assert_baresip_heard(bs: &Baresip, freq: f64) {
    let (_, received) = bs.recordings();
    let wav: PathBuf = received
        .last()
        .cloned()
        .expect("baresip recorded what it received");
    assert_tone(&wav, freq);
}

/// The harness itself, with no siproam: two baresips (`srtp-mand`) call
/// each other; the call is SRTP with AES_CM_128_HMAC_SHA1_80 (one crypto
/// line each way), both streams secure, each recording holds the other's
/// tone, no RTP packet fails SRTP. (Their one RTCP error is baresip's own
/// plain `PINGPONG` packet, sent as each stream starts.)
#[test]
fn two_baresips_call_each_other_over_srtp() {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir("srtp-baresips");
    let (carol, uri) = carol(&dir, 700, &BaresipOptions::srtp("srtp-mand"));
    let (port, ctrl) = (free_port(1), free_port(0));
    let bob = Baresip::start_with(
        port,
        ctrl,
        &dir.join("bob"),
        &["--user", "bob", "--freq", "1000", "--record"],
        &BaresipOptions::srtp("srtp-mand"),
    );
    bob.ctrl(&[
        "dial",
        &uri,
        "--wait",
        "CALL_ESTABLISHED",
        "--timeout",
        "10",
    ]);
    // a second of media, counted by carol as it arrives
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut stats = carol.rtp_stats();
    while stats.rx < 50 {
        assert!(std::time::Instant::now() < deadline, "{stats:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        stats = carol.rtp_stats();
    }
    assert_secure(&stats, "srtp-mand", &carol);
    assert_secure(&bob.rtp_stats(), "srtp-mand", &bob);
    bob.ctrl(&["hangup", "--wait", "CALL_CLOSED", "--timeout", "10"]);
    carol.wait_calls_ended(1);
    bob.wait_calls_ended(1);
    for bs in [&carol, &bob] {
        assert_eq!(bs.srtp_suite().as_deref(), Some(BARESIP_OFFERS));
        let lines = bs.crypto_lines();
        assert_eq!(lines.len(), 2, "an offer and an answer: {lines:?}");
        for l in &lines {
            assert!(
                l.starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
                "{l}"
            );
        }
        let rtp_errors: Vec<String> = bs
            .srtp_errors()
            .into_iter()
            .filter(|e| !e.contains("RTCP packet with 16 bytes"))
            .collect();
        assert!(rtp_errors.is_empty(), "{}", srtp_story(bs));
        let (sent, received) = bs.packets();
        assert!(sent > 50 && received > 50, "{sent} {received}");
    }
    assert_baresip_heard(&carol, 1000.0);
    assert_baresip_heard(&bob, 700.0);
    drop(bob);
    drop(carol);
    let _ = std::fs::remove_dir_all(dir);
}

/// baresip's `audio_debug` report is read as it is written.
#[test]
fn baresip_audio_debug_reports_are_read() {
    let report = "\n--- Audio stream ---\n \
         local: 0.0.0.0:6140, remote: 127.0.0.3:43802/127.0.0.3:43803\n \
         mnat: (none) (connected=no)\n \
         menc: srtp-mand (secure=yes)\n\
         RTP debug:\n\
         ----- RTCP Session: -----\n  \
         member 0x55bc4af0: lost=0 Jitter=1.7ms RTT=0.0ms\n                 \
         IP=127.0.0.1:43802 psent=250 rcvd=262\n  \
         TX: packets=270, octets=41920\n";
    let stats = parse_audio_debug(report);
    assert_eq!(
        stats,
        RtpStats {
            rx: 262,
            tx: 270,
            remote: "127.0.0.3:43802".into(),
            menc: "srtp-mand".into(),
            secure: true,
        }
    );
    let plain = parse_audio_debug(" menc: (none) (secure=no)\n");
    assert_eq!((plain.menc.as_str(), plain.secure), ("(none)", false));
}

/// siproam calls baresip (`srtp-mand`: RTP/SAVP) with `--srtp mandatory`:
/// the call is SRTP with the suite baresip enabled (named by our `media`
/// events, during and at the end), baresip's stream is secure, each hears
/// the other's tone, baresip logs no SRTP error.
#[test]
fn siproam_calls_baresip_over_srtp_and_each_hears_the_other() {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir("srtp-out");
    let (bs, uri) = carol(&dir, 700, &BaresipOptions::srtp("srtp-mand"));
    let wav = dir.join("from-baresip.wav");
    let mut call = alice_calls(&uri, "mandatory", &wav);
    call.wait_call("siproam", "confirmed");
    let m = media_with(&call, "SRTP media from baresip", 80);
    let suite = bs
        .srtp_suite()
        .unwrap_or_else(|| panic!("baresip never enabled SRTP; {}", srtp_story(&bs)));
    assert!(SUITES.contains(&suite.as_str()), "{suite}");
    assert_eq!(srtp_of(&m).as_deref(), Some(suite.as_str()), "{m}");
    // our offer was RTP/SAVP with a crypto line (baresip's srtp-mand
    // refuses anything else with 488)
    assert!(bs.log().contains("RTP/SAVP"), "{}", bs.log());
    let stats = bs.rtp_stats();
    assert_secure(&stats, "srtp-mand", &bs);
    assert!(stats.rx > 50, "baresip got our SRTP: {stats:?}");
    // baresip's SRTCP reaches our RTP port (our `a=rtcp`) and
    // authenticates: only accepted reports are counted. (baresip also
    // sends one plain 16-byte RTCP APP "PING" at the start, which SRTP
    // rightly drops, so `srtp_dropped` is not 0 here.)
    call.wait_for("an SRTCP report from baresip", |v| {
        v["event"] == "media" && v["rtcp_rx_packets"].as_u64().unwrap_or(0) >= 1
    });
    call.send("hangup");
    let end = call.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert_eq!(srtp_of(&end).as_deref(), Some(suite.as_str()), "{end}");
    assert!(call.child.wait().unwrap().success());
    bs.wait_calls_ended(1);
    assert_tone(&wav, 700.0);
    let (sent, received) = bs.packets();
    assert!(
        sent > 50 && received > 50,
        "baresip's packets: sent {sent} received {received}"
    );
    assert_baresip_heard(&bs, 1000.0);
    assert_no_srtp_errors(&bs);
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}

/// baresip with `mediaenc` calls `siproam agent` with `srtp_args` (e.g.
/// `--srtp mandatory`; answering at once): both hear each other; the
/// agent's `media` events name `suite` (`None`: plain RTP), baresip's
/// stream is secure exactly when a suite is expected.
fn baresip_calls_an_agent(name: &str, mediaenc: &str, srtp_args: &[&str], suite: Option<&str>) {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir(name);
    let (bs, _) = carol(&dir, 700, &BaresipOptions::srtp(mediaenc));
    let aport = free_port(0);
    let listen = format!("udp:127.0.0.1:{aport}");
    let wav = dir.join("agent.wav");
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        "sip:dave@127.0.0.1",
        "--listen",
        &listen,
        "--auto-answer",
        "--play",
        "tone:1000",
        "--record",
        wav.to_str().unwrap(),
        "--stay",
    ];
    args.extend_from_slice(srtp_args);
    let agent = Proc::spawn(&args);
    agent.wait_for("listener", |v| v["event"] == "listening");
    bs.ctrl(&[
        "dial",
        &format!("sip:dave@127.0.0.1:{aport}"),
        "--wait",
        "CALL_ESTABLISHED",
        "--timeout",
        "10",
    ]);
    agent.wait_call("agent", "confirmed");
    let m = media_with(&agent, "media from baresip", 80);
    assert_eq!(srtp_of(&m).as_deref(), suite, "{m}; {}", srtp_story(&bs));
    let stats = bs.rtp_stats();
    assert_eq!(
        stats.secure,
        suite.is_some(),
        "baresip's stream: {stats:?}; {}",
        srtp_story(&bs)
    );
    assert_eq!(stats.menc, mediaenc, "{stats:?}");
    if let Some(s) = suite {
        assert_eq!(bs.srtp_suite().as_deref(), Some(s), "{}", srtp_story(&bs));
    }
    assert!(stats.rx > 50, "baresip hears us: {stats:?}");
    bs.ctrl(&["hangup", "--wait", "CALL_CLOSED", "--timeout", "10"]);
    let end = agent.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert!(end["tx_packets"].as_u64().unwrap() > 50, "{end}");
    assert_eq!(srtp_of(&end).as_deref(), suite, "{end}");
    bs.wait_calls_ended(1);
    assert_tone(&wav, 700.0);
    let (sent, received) = bs.packets();
    assert!(
        sent > 50 && received > 50,
        "baresip's packets: sent {sent} received {received}"
    );
    assert_baresip_heard(&bs, 1000.0);
    assert_no_srtp_errors(&bs);
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}

/// baresip's RTP/SAVP offer (`srtp-mand`, one AES_CM_128_HMAC_SHA1_80
/// line) to an agent with `--srtp mandatory`: SRTP both ways.
#[test]
fn baresip_calls_an_agent_with_srtp_mandatory() {
    baresip_calls_an_agent(
        "srtp-in-mand",
        "srtp-mand",
        &["--srtp", "mandatory"],
        Some(BARESIP_OFFERS),
    );
}

/// baresip's best-effort offer (`srtp`: RTP/AVP with a crypto line) to an
/// agent with `--srtp optional`: the agent takes the SRTP.
#[test]
fn baresip_best_effort_srtp_calls_an_agent_with_srtp_optional() {
    baresip_calls_an_agent(
        "srtp-in-opt",
        "srtp",
        &["--srtp", "optional"],
        Some(BARESIP_OFFERS),
    );
}

/// baresip's best-effort offer (RTP/AVP with a crypto line) to an agent
/// with `--srtp off`: answered plain (no crypto line), and the call is
/// plain RTP both ways (baresip falls back).
#[test]
fn baresip_best_effort_srtp_calls_an_agent_with_srtp_off_in_plain_rtp() {
    baresip_calls_an_agent("srtp-in-off", "srtp", &["--srtp", "off"], None);
}

/// `srtp = "mandatory"` in the config file's `[call]` table (no flag):
/// baresip's RTP/SAVP offer is taken, the call is SRTP.
#[test]
fn srtp_from_the_config_file_takes_effect() {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir("srtp-config");
    let cfg = dir.join("dave.toml");
    std::fs::write(&cfg, "[call]\nsrtp = \"mandatory\"\n").unwrap();
    baresip_calls_an_agent(
        "srtp-in-config",
        "srtp-mand",
        &["--config", cfg.to_str().unwrap()],
        Some(BARESIP_OFFERS),
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `--srtp off` on the command line beats `srtp = "mandatory"` in the
/// file: baresip's best-effort offer is answered plain.
#[test]
fn the_srtp_flag_beats_the_config_file() {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir("srtp-config-flag");
    let cfg = dir.join("dave.toml");
    std::fs::write(&cfg, "[call]\nsrtp = \"mandatory\"\n").unwrap();
    baresip_calls_an_agent(
        "srtp-in-config-flag",
        "srtp",
        &["--config", cfg.to_str().unwrap(), "--srtp", "off"],
        None,
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `siproam call --srtp optional` (RTP/AVP with crypto lines) to a baresip
/// without SRTP: baresip answers plain, the call is plain RTP (`srtp`
/// null) and each hears the other.
#[test]
fn an_optional_srtp_call_to_a_plain_baresip_falls_back_to_rtp() {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir("srtp-fallback");
    let (bs, uri) = carol(&dir, 700, &BaresipOptions::default());
    let wav = dir.join("from-baresip.wav");
    let mut call = alice_calls(&uri, "optional", &wav);
    call.wait_call("siproam", "confirmed");
    let m = media_with(&call, "plain media from baresip", 80);
    assert_eq!(srtp_of(&m), None, "{m}");
    // we did offer SRTP (RTP/AVP with a crypto line), baresip answered plain
    let log = bs.log();
    assert!(
        log.contains("a=crypto:"),
        "our offer had a crypto line: {log}"
    );
    let stats = bs.rtp_stats();
    assert!(!stats.secure, "{stats:?}");
    assert!(stats.rx > 50, "baresip hears us: {stats:?}");
    call.send("hangup");
    let end = call.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert_eq!(srtp_of(&end), None, "{end}");
    assert!(call.child.wait().unwrap().success());
    bs.wait_calls_ended(1);
    assert_tone(&wav, 700.0);
    assert_baresip_heard(&bs, 1000.0);
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}

/// Every `ip_change` event up to `completed`, each checked `ok`.
fn stages_ok(p: &Proc) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = p.wait_for("ip_change", |v| v["event"] == "ip_change");
        assert_eq!(v["status"], "ok", "{v}");
        let done = v["stage"] == "completed";
        seen.push(v);
        if done {
            return seen;
        }
    }
}

/// A hand-off in the middle of an SRTP call with baresip, on loopback: the
/// agent (media on 127.0.0.2) calls baresip (`srtp-mand`), then gets
/// `ip-change 127.0.0.3`: its re-INVITE moves the media, baresip follows
/// (sends to 127.0.0.3), our `rx_packets` keep growing on the new address
/// after the refresh, baresip's received count keeps growing, its stream
/// stays secure with the same suite, and it logs no SRTP error (no
/// authentication failure, no replay: the re-offer kept the crypto line,
/// which baresip 1.0.0 needs as it never re-keys). Both recordings hold
/// the other's tone.
#[test]
fn an_srtp_call_with_baresip_survives_a_handoff() {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir("srtp-handoff");
    let (bs, uri) = carol(&dir, 700, &BaresipOptions::srtp("srtp-mand"));
    let wav = dir.join("alice.wav");
    let mut alice = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:alice@127.0.0.2",
        "--listen",
        "udp:127.0.0.2:0",
        "--srtp",
        "mandatory",
        "--play",
        "tone:1000",
        "--record",
        wav.to_str().unwrap(),
    ]);
    alice.wait_for("listener", |v| v["event"] == "listening");
    alice.send(&format!("call {uri}"));
    alice.wait_call("alice", "confirmed");
    let first = media_with(&alice, "SRTP media before the change", 50);
    let suite = srtp_of(&first).unwrap_or_else(|| panic!("not SRTP: {first}"));
    assert_eq!(bs.srtp_suite().as_deref(), Some(suite.as_str()));
    let before = bs.rtp_stats();
    assert_secure(&before, "srtp-mand", &bs);
    assert!(before.remote.starts_with("127.0.0.2:"), "{before:?}");

    alice.send("ip-change 127.0.0.3");
    let stages = stages_ok(&alice);
    assert!(
        stages.iter().any(|v| v["stage"] == "refresh_calls"),
        "{stages:?}"
    );
    let answered = alice.seen_or_wait("the re-offer answered", |v| {
        v["event"] == "call_refresh" && v["state"] == "answered"
    });
    let moved = alice.seen_or_wait("media_moved", |v| {
        v["event"] == "media_moved"
            && v["local"]
                .as_str()
                .is_some_and(|l| l.starts_with("127.0.0.3:"))
    });
    // our count when the move was reported: it keeps growing on the new
    // address after it
    let at_move = alice
        .seen()
        .iter()
        .rev()
        .find(|v| v["event"] == "media")
        .and_then(|v| v["rx_packets"].as_u64())
        .unwrap_or(0);
    let after = alice.wait_for("SRTP media on the new address", |v| {
        v["event"] == "media"
            && v["local"]
                .as_str()
                .is_some_and(|l| l.starts_with("127.0.0.3:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > at_move + 50
    });
    assert_eq!(
        srtp_of(&after).as_deref(),
        Some(suite.as_str()),
        "{after}; refresh {answered}; moved {moved}"
    );
    let later = bs.rtp_stats();
    assert_secure(&later, "srtp-mand", &bs);
    assert!(
        later.remote.starts_with("127.0.0.3:"),
        "baresip follows the re-INVITE: {later:?}"
    );
    assert!(
        later.rx > before.rx + 50,
        "baresip keeps hearing us after the move: before {before:?}, after {later:?}; {}",
        srtp_story(&bs)
    );
    assert_no_srtp_errors(&bs);
    assert!(after["lost"].as_u64().unwrap() <= 3, "{after}");

    alice.send("hangup");
    let end = alice.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert_eq!(srtp_of(&end).as_deref(), Some(suite.as_str()), "{end}");
    bs.wait_calls_ended(1);
    // (its end-of-call `packets:` line counts on another basis than
    // audio_debug's `rcvd`, so only its own growth is compared)
    let (_, received) = bs.packets();
    assert!(received > 50, "baresip's packets: {received}");
    assert_no_srtp_errors(&bs);
    assert_tone(&wav, 700.0);
    assert_baresip_heard(&bs, 1000.0);
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}

/// `siproam call --srtp mandatory` to a baresip without SRTP: baresip
/// refuses the RTP/SAVP offer with 488, and `siproam call` fails clearly:
/// exit 1, `call failed` once, naming the 488 and SRTP.
#[test]
fn mandatory_srtp_towards_a_plain_baresip_fails_naming_srtp() {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir("srtp-refused-out");
    let (bs, uri) = carol(&dir, 700, &BaresipOptions::default());
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_siproam"))
        .args([
            "call",
            &uri,
            "--aor",
            "sip:alice@example.test",
            "--listen",
            "udp:127.0.0.2:0",
            "--no-watch",
            "--srtp",
            "mandatory",
            "--play",
            "tone:1000",
        ])
        .env("XDG_STATE_HOME", &state)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.matches("call failed").count(), 1, "stderr: {err}");
    assert!(err.contains("488"), "stderr: {err}");
    assert!(
        err.to_ascii_lowercase().contains("srtp"),
        "the reason names SRTP: {err}"
    );
    // baresip saw an RTP/SAVP offer and refused it
    let log = bs.log();
    assert!(log.contains("RTP/SAVP"), "{log}");
    assert!(log.contains("SIP/2.0 488"), "{log}");
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}

/// baresip (`srtp-mand`: RTP/SAVP) calls an agent with `--srtp off`: the
/// agent refuses the offer with 488 and no call is confirmed. (Before
/// SRTP, siproam answered RTP/SAVP with RTP/AVP, and baresip took that
/// answer: a plain call it believed mandatory-SRTP.)
#[test]
fn baresip_mandatory_srtp_towards_an_agent_with_srtp_off_gets_488() {
    if !baresip_with_srtp() {
        return;
    }
    let dir = temp_dir("srtp-refused-in");
    let (bs, _) = carol(&dir, 700, &BaresipOptions::srtp("srtp-mand"));
    let aport = free_port(0);
    let listen = format!("udp:127.0.0.1:{aport}");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:dave@127.0.0.1",
        "--listen",
        &listen,
        "--auto-answer",
        "--srtp",
        "off",
        "--stay",
    ]);
    agent.wait_for("listener", |v| v["event"] == "listening");
    // (baresip's srtp-mand takes an answer without SRTP: an agent that
    // answered RTP/AVP would get an established, plain call)
    let closed = bs.ctrl(&[
        "dial",
        &format!("sip:dave@127.0.0.1:{aport}"),
        "--wait",
        "CALL_CLOSED,CALL_ESTABLISHED",
        "--timeout",
        "15",
    ]);
    assert!(
        closed.contains("CALL_CLOSED") && closed.contains("488"),
        "the agent must refuse baresip's RTP/SAVP offer with 488: {closed}; {}",
        bs.log()
    );
    let log = bs.log();
    assert!(log.contains("SIP/2.0 488"), "{log}");
    assert!(!log.contains("Call established"), "{log}");
    agent.wait_quiet(std::time::Duration::from_millis(500));
    assert!(
        !agent
            .seen()
            .iter()
            .any(|v| v["event"] == "call" && v["state"] == "confirmed"),
        "{:?}",
        agent.seen()
    );
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}

/// The hand-off network (root): baresip (`srtp-mand`) in the server
/// namespace on 10.9.0.2, Alice's agent in the handset calling it over
/// wifi with `--srtp mandatory`; wifi's address is removed, Alice moves
/// to cell by herself and re-offers; SRTP media flows both ways on cell
/// (baresip sends there and keeps receiving), no SRTP error, both tones
/// heard.
#[test]
fn an_srtp_call_with_baresip_moves_from_wifi_to_cell() {
    use common::netns::{del_addr, Topology, CELL, SERVER, WIFI};
    if !baresip_with_srtp() || !can_build_namespaces() {
        return;
    }
    let t = Topology::new("p");
    let dir = temp_dir("srtp-netns");
    let port = 5062;
    let bs = Baresip::start_with(
        port,
        5070,
        &dir.join("bs"),
        &[
            "--auto-answer",
            "--user",
            "carol",
            "--freq",
            "700",
            "--record",
        ],
        &BaresipOptions {
            mediaenc: Some("srtp-mand".into()),
            address: Some(SERVER.into()),
            netns: Some(t.server.clone()),
            ..BaresipOptions::default()
        },
    );
    let wav = dir.join("alice.wav");
    let mut alice = t.spawn(
        &t.handset,
        &[
            "agent",
            "--json",
            "--aor",
            "sip:alice@example.test",
            "--listen",
            "udp:0.0.0.0:0",
            "--srtp",
            "mandatory",
            "--play",
            "tone:1000",
            "--record",
            wav.to_str().unwrap(),
        ],
    );
    alice.wait_for("listener", |v| v["event"] == "listening");
    alice.send(&format!("call sip:carol@{SERVER}:{port}"));
    alice.wait_call("alice", "confirmed");
    let first = alice.wait_for("SRTP media over wifi", |v| {
        v["event"] == "media"
            && v["local"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("{WIFI}:")))
            && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    let suite = srtp_of(&first).unwrap_or_else(|| panic!("not SRTP: {first}"));
    let before = bs.rtp_stats();
    assert_secure(&before, "srtp-mand", &bs);
    assert!(before.remote.starts_with(&format!("{WIFI}:")), "{before:?}");

    del_addr(&t, "10.1.0.2/24", "wifi0");
    let stages = stages_ok(&alice);
    assert!(
        stages.iter().any(|v| v["stage"] == "refresh_calls"),
        "{stages:?}"
    );
    let after = alice.wait_for("SRTP media over cell", |v| {
        v["event"] == "media"
            && v["local"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("{CELL}:")))
            && v["rx_packets"].as_u64().unwrap_or(0) > first["rx_packets"].as_u64().unwrap() + 50
    });
    assert_eq!(srtp_of(&after).as_deref(), Some(suite.as_str()), "{after}");
    let later = bs.rtp_stats();
    assert_secure(&later, "srtp-mand", &bs);
    assert!(
        later.remote.starts_with(&format!("{CELL}:")),
        "baresip sends to cell: {later:?}"
    );
    assert!(
        later.rx > before.rx + 50,
        "baresip keeps hearing us over cell: before {before:?}, after {later:?}; {}",
        srtp_story(&bs)
    );
    assert_no_srtp_errors(&bs);
    assert!(
        !alice
            .seen()
            .iter()
            .any(|v| v["event"] == "call" && v["state"] == "disconnected"),
        "the call survived"
    );
    alice.send("hangup");
    let end = alice.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert_eq!(srtp_of(&end).as_deref(), Some(suite.as_str()), "{end}");
    bs.wait_calls_ended(1);
    assert_no_srtp_errors(&bs);
    assert_tone(&wav, 700.0);
    assert_baresip_heard(&bs, 1000.0);
    drop(bs);
    drop(t);
    let _ = std::fs::remove_dir_all(dir);
}

/// Two siproam processes, no baresip: `siproam call --srtp mandatory` to an
/// agent with `--srtp mandatory`. Each end's RTCP reaches the other on its
/// RTP port (`a=rtcp`, `a=rtcp-mux`), is authenticated there as SRTCP and
/// counted, and nothing is refused. Before `a=rtcp`/`a=rtcp-mux`, RTCP
/// went to the RTP port + 1, where nothing of ours listens: no report ever
/// arrived, and with many calls one call's SRTCP landed on another call's
/// socket and failed its authentication.
#[test]
fn two_agents_exchange_srtcp_on_the_rtp_port_and_refuse_nothing() {
    let dir = temp_dir("srtp-two-agents");
    let aport = free_port(0);
    let listen = format!("udp:127.0.0.1:{aport}");
    let mut agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:dave@127.0.0.1",
        "--listen",
        &listen,
        "--auto-answer",
        "--play",
        "tone:700",
        "--srtp",
        "mandatory",
        "--stay",
    ]);
    agent.wait_for("listener", |v| v["event"] == "listening");
    let wav = dir.join("from-agent.wav");
    let mut call = alice_calls(&format!("sip:dave@127.0.0.1:{aport}"), "mandatory", &wav);
    call.wait_call("siproam", "confirmed");
    agent.wait_call("agent", "confirmed");
    let has_rtcp =
        |v: &Value| v["event"] == "media" && v["rtcp_rx_packets"].as_u64().unwrap_or(0) >= 1;
    let ours = call.wait_for("an SRTCP report from the agent", has_rtcp);
    let theirs = agent.wait_for("an SRTCP report from siproam call", has_rtcp);
    for m in [&ours, &theirs] {
        assert_eq!(
            srtp_of(m).as_deref(),
            Some("AES_CM_128_HMAC_SHA1_80"),
            "{m}"
        );
        assert_eq!(m["srtp_dropped"], 0, "{m}");
    }
    // the agent's `status` names the suite of the call's media
    agent.send("status");
    let status = agent.wait_for("status", |v| v["event"] == "status");
    assert_eq!(
        status["calls"][0]["media"]["srtp"], "AES_CM_128_HMAC_SHA1_80",
        "{status}"
    );
    call.send("hangup");
    let end = call.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert_eq!(end["srtp_dropped"], 0, "{end}");
    assert!(end["rx_packets"].as_u64().unwrap() > 50, "{end}");
    assert!(call.child.wait().unwrap().success());
    let end = agent.wait_for("the agent's final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert_eq!(end["srtp_dropped"], 0, "{end}");
    assert!(end["rtcp_rx_packets"].as_u64().unwrap() >= 1, "{end}");
    assert_tone(&wav, 700.0);
    let _ = std::fs::remove_dir_all(dir);
}

/// `siproam call --srtp mandatory` to a SIPp UAS that answers the RTP/SAVP
/// offer with plain RTP/AVP (no `a=crypto`): the call is ACKed and ended
/// at once with a BYE whose `Reason` gives 488 (SIPp's scenario fails
/// without it), no RTP is ever sent or reported (no `media` event), and
/// the command fails (exit 1) saying why, once.
#[test]
fn mandatory_srtp_answered_plain_is_ended_with_a_bye_and_no_media() {
    if !have("sipp") {
        return;
    }
    let dir = temp_dir("srtp-plain-answer");
    let (port, mport) = (free_port(0), free_port(3));
    let mut sipp = sipp_uas("uas_plain_answer.xml", &dir, port, mport, &["-trace_logs"]);
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_siproam"))
        .args(["call", &format!("sip:plain@127.0.0.1:{port}"), "--json"])
        .args([
            "--aor",
            "sip:alice@example.test",
            "--listen",
            "udp:127.0.0.2:0",
        ])
        .args(["--no-watch", "--srtp", "mandatory", "--play", "tone:1000"])
        .env("XDG_STATE_HOME", &state)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(out.status.code(), Some(1), "stderr: {err}; {events:?}");
    assert_eq!(err.matches("call failed").count(), 1, "stderr: {err}");
    assert!(
        err.contains("SRTP is mandatory")
            && err.contains("no usable crypto")
            && err.contains("488"),
        "stderr: {err}"
    );
    let calls: Vec<&str> = events
        .iter()
        .filter(|v| v["event"] == "call")
        .filter_map(|v| v["state"].as_str())
        .collect();
    assert!(
        calls.contains(&"confirmed") && calls.last() == Some(&"disconnected"),
        "the 2xx was taken (and ACKed), then the call ended: {events:?}"
    );
    assert!(
        !events.iter().any(|v| v["event"] == "media"),
        "no media at all: {events:?}"
    );
    let sipp_status = sipp.0.wait().unwrap();
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with("_logs.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        sipp_status.success(),
        "SIPp's scenario (BYE with Reason cause=488) failed: {sipp_status}; {log}"
    );
    assert!(log.contains("cause=488"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The `a=crypto:1 AES_CM_128_HMAC_SHA1_80` keys in a capture, distinct,
/// in order of first appearance.
fn crypto_keys(pcap: &Path) -> Vec<String> {
    let bytes = std::fs::read(pcap).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let mut keys: Vec<String> = Vec::new();
    for part in text
        .split("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
        .skip(1)
    {
        let key: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
            .collect();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// `rekey` in the middle of an SRTP call between two siproam processes:
/// the caller offers a new key in a re-INVITE (the capture holds three
/// distinct keys: the caller's first, the agent's, the caller's new one;
/// two before), the peer answers, and the stream goes on both ways without
/// a packet refused or lost: the agent keeps the old key until one
/// authenticates under the new. A plain call cannot be re-keyed.
#[test]
fn rekey_mid_call_changes_the_keys_and_loses_nothing() {
    let dir = temp_dir("srtp-rekey");
    let pcap = dir.join("agent.pcap");
    let aport = free_port(0);
    let listen = format!("udp:127.0.0.1:{aport}");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:dave@127.0.0.1",
        "--listen",
        &listen,
        "--auto-answer",
        "--play",
        "tone:700",
        "--srtp",
        "optional",
        "--pcap",
        pcap.to_str().unwrap(),
        "--stay",
    ]);
    agent.wait_for("listener", |v| v["event"] == "listening");
    let wav = dir.join("from-agent.wav");
    let mut call = alice_calls(&format!("sip:dave@127.0.0.1:{aport}"), "mandatory", &wav);
    call.wait_call("siproam", "confirmed");
    agent.wait_call("agent", "confirmed");
    let before = media_with(&agent, "SRTP media before the re-key", 50);
    assert_eq!(srtp_of(&before).as_deref(), Some("AES_CM_128_HMAC_SHA1_80"));
    assert_eq!(crypto_keys(&pcap).len(), 2, "{:?}", crypto_keys(&pcap));

    call.send("rekey");
    call.wait_for("the re-key answered", |v| {
        v["event"] == "call_refresh" && v["state"] == "answered"
    });
    let at = before["rx_packets"].as_u64().unwrap();
    let after = agent.wait_for("SRTP media after the re-key", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > at + 100
    });
    let ours = call.wait_for("media at the caller after the re-key", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > at + 100
    });
    for m in [&after, &ours] {
        assert_eq!(m["srtp_dropped"], 0, "{m}");
        assert_eq!(m["lost"], 0, "{m}");
    }
    let keys = crypto_keys(&pcap);
    assert_eq!(keys.len(), 3, "a new key was offered: {keys:?}");

    call.send("hangup");
    let end = call.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert_eq!(end["srtp_dropped"], 0, "{end}");
    assert!(call.child.wait().unwrap().success());
    let end = agent.wait_for("the agent's final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert_eq!(
        (&end["srtp_dropped"], &end["lost"]),
        (&0.into(), &0.into()),
        "{end}"
    );
    assert_tone(&wav, 700.0);
    let _ = std::fs::remove_dir_all(&dir);

    // a plain call: `rekey` is refused, the call goes on
    let dir = temp_dir("srtp-rekey-plain");
    let aport = free_port(0);
    let listen = format!("udp:127.0.0.1:{aport}");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:erin@127.0.0.1",
        "--listen",
        &listen,
        "--auto-answer",
        "--stay",
    ]);
    agent.wait_for("listener", |v| v["event"] == "listening");
    let mut call = alice_calls(
        &format!("sip:erin@127.0.0.1:{aport}"),
        "off",
        &dir.join("x.wav"),
    );
    call.wait_call("siproam", "confirmed");
    call.send("rekey");
    let refused = call.wait_for("the refusal", |v| v["event"] == "error");
    assert!(refused.to_string().contains("not SRTP"), "{refused}");
    call.send("hangup");
    assert!(call.child.wait().unwrap().success());
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}
