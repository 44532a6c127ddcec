//! Authenticated calls through Kamailio 5.6 (`interop/kamailio/kamailio.cfg`
//! with calls challenged, `qop="auth"`, in-dialog requests challenged too
//! and `nonce_count` checking that each reuse of a nonce carries a greater
//! `nc`): a `siproam agent` call gets a 407, answers it and goes on; its
//! re-INVITE (hold) and BYE pass Kamailio's digest check with the cached
//! challenge answered pre-emptively; with a wrong password the INVITE is
//! answered once and the call ends with the second 407 (no loop).
//!
//! Kamailio comes from Debian (`interop/install.sh`); without it the test
//! says why it is skipped, and with `SIPROAM_REQUIRE_INTEROP=1` (CI) it
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::time::Duration;

#[test]
fn a_call_through_kamailio_answers_its_407_then_holds_and_hangs_up() {
    if !Kamailio::available() {
        return;
    }
    let (kam, port) = Kamailio::start_local(
        "-A WITH_QOP -A WITH_DIALOG_AUTH -A WITH_NONCE_COUNT",
        "auth",
    );
    let registrar = format!("sip:127.0.0.1:{port}");
    let listen = "udp:127.0.0.1:0";
    let mut bob = account_agent(&registrar, "bob", "bobpw", listen, &["--auto-answer"]);
    let mut alice = account_agent(&registrar, "alice", "alicepw", listen, &[]);
    for (who, p) in [("bob", &bob), ("alice", &alice)] {
        p.wait_registered(who);
    }
    alice.send("call sip:bob@example.test");
    bob.wait_call("bob", "confirmed");
    alice.wait_call("alice", "confirmed");
    // the INVITE was challenged once, then let through with CSeq 2
    let lines = auth_lines(&kam, "the INVITE authenticated", |l| {
        l.iter().any(|x| x.starts_with("ok INVITE"))
    });
    assert_eq!(
        lines,
        ["407 INVITE 1 from alice", "ok INVITE 2 from alice"],
        "one challenge, answered"
    );
    // hold: a re-INVITE, authenticated with the cached challenge (nc 2)
    alice.send("hold");
    auth_lines(&kam, "the re-INVITE authenticated", |l| {
        l.iter().any(|x| x == "ok INVITE 3 from alice")
    });
    alice.send("hangup");
    bob.wait_call("bob", "disconnected");
    let lines = auth_lines(&kam, "the BYE authenticated", |l| {
        l.iter().any(|x| x.starts_with("ok BYE"))
    });
    assert_eq!(
        lines,
        [
            "407 INVITE 1 from alice",
            "ok INVITE 2 from alice",
            "ok INVITE 3 from alice",
            "ok BYE 4 from alice"
        ],
        "no other challenge, nothing refused"
    );
    let ended = alice.wait_call("alice", "disconnected");
    assert_ne!(ended["code"], 407, "{ended}");
    alice.quit();
    bob.quit();
}

/// A wrong password: Kamailio challenges the INVITE again after our
/// answer; the call ends with that 407, after exactly two INVITEs.
#[test]
fn a_wrong_password_ends_a_call_through_kamailio_after_one_answer() {
    if !Kamailio::available() {
        return;
    }
    let (kam, port) = Kamailio::start_local("-A WITH_QOP", "authbad");
    let registrar = format!("sip:127.0.0.1:{port}");
    let mut alice = account_agent(&registrar, "alice", "wrong", "udp:127.0.0.1:0", &[]);
    alice.wait_for("the registration refused", |v| {
        v["event"] == "registration" && v["state"] == "failed"
    });
    alice.send("call sip:bob@example.test");
    let ended = alice.wait_for("the call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    assert_eq!(ended["code"], 407, "{ended}");
    // said plainly, with the user and realm (Kamailio's realm is its domain)
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("authentication failed for alice at realm "),
        "{ended}"
    );
    // no third INVITE comes later
    std::thread::sleep(Duration::from_secs(2));
    let lines = auth_lines(&kam, "two challenges", |l| l.len() >= 2);
    assert_eq!(
        lines,
        ["407 INVITE 1 from alice", "407 INVITE 2 from alice"],
        "answered once, never looped"
    );
    alice.quit();
}
