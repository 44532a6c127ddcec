//! `siproam msg check` as `cli.md` specifies it: exit status, text and
//! JSON output, on valid and invalid messages; every problem with its
//! line, and an SDP body's grammar and whether the stack could answer it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const OPTIONS: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: check-1@example.com\r\n\
CSeq: 7 OPTIONS\r\n\
Contact: <sip:alice@192.0.2.1:5060;ob>\r\n\
Content-Length: 0\r\n\r\n";

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn torture(name: &str) -> String {
    format!(
        "{}/../siproam-sip/tests/rfc4475/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn valid_message_from_stdin() {
    let out = run(&["msg", "check"], OPTIONS.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("valid request: OPTIONS sip:bob@example.com"),
        "{text}"
    );
    assert!(text.contains("Call-ID: check-1@example.com"));
    assert!(text.contains("CSeq:    7 OPTIONS"));
    assert!(text.contains("branch=z9hG4bKabc"));
    assert!(text.contains("Contact: sip:alice@192.0.2.1:5060;ob"));
}

#[test]
fn valid_message_json() {
    let out = run(&["msg", "check", "--json", "-"], OPTIONS.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["kind"], "request");
    assert_eq!(v["method"], "OPTIONS");
    assert_eq!(v["call_id"], "check-1@example.com");
    assert_eq!(v["cseq"]["seq"], 7);
    assert_eq!(v["via"]["branch"], "z9hG4bKabc");
    assert_eq!(v["via"]["port"], 5060);
    assert_eq!(v["contact"][0], "sip:alice@192.0.2.1:5060;ob");
}

#[test]
fn invalid_messages_name_the_answer() {
    for (file, code) in [
        ("badvers.dat", "505"),
        ("insuf.dat", "400"),
        ("unkscm.dat", "416"),
        ("bext01.dat", "420"),
        ("bigcode.dat", "drop"),
    ] {
        let out = run(&["msg", "check", &torture(file)], b"");
        assert_eq!(out.status.code(), Some(1), "{file}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("error: "), "{file}: {text}");
        assert!(
            text.trim_end().ends_with(&format!("(would answer {code})")),
            "{file}: {text}"
        );
    }
}

#[test]
fn invalid_message_json() {
    let out = run(&["msg", "check", "--json", &torture("scalar02.dat")], b"");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["status"], 400);
    assert!(v["error"].as_str().unwrap().contains("CSeq"));
    let out = run(&["msg", "check", "--json", &torture("scalarlg.dat")], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "drop");
}

#[test]
fn usage_and_runtime_errors() {
    let out = run(&["msg", "frobnicate"], b"");
    assert_eq!(out.status.code(), Some(2), "bad usage exits 2");
    let out = run(&["msg", "check", "/nonexistent/message.sip"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("/nonexistent/message.sip"));
    let out = run(&["msg", "check"], b"");
    assert_eq!(out.status.code(), Some(1), "empty input is not a message");
}

const BAD: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
Via: SIP/2.0/UDP host;branch=z9hG4bK1\r\n\
Via: garbage here\r\n\
Max-Forwards: abc\r\n\
From: <sip:alice@example.test>;tag=1\r\n\
To: <sip:bob@example.test>\r\n\
Call-ID: x@y\r\n\
CSeq: 1 INVITE\r\n\
Expires: never\r\n\
Contact: <sip:alice@192.0.2.1>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 83\r\n\
\r\n\
v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
m=audio 99999 RTP/AVP 0\r\n\
a=rtpmap:8 PCMA/8000\r\n";

#[test]
fn every_error_is_reported_with_its_line_and_the_sdp_body_is_checked() {
    let out = run(&["msg", "check", "-"], BAD.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "error: line 3: invalid Via header: syntax error (would answer 400)",
            "error: line 4: invalid Max-Forwards header: syntax error (would answer 400)",
            "error: line 9: invalid Expires header: syntax error (would answer 400)",
            "error: line 14: SDP: no `t=` line (it is required) (would answer 488)",
            "error: line 17: SDP: port \"99999\" is not a number up to 65535 (would answer 488)",
            "error: line 17: SDP: no `c=` for this media, nor for the session (would answer 488)",
            "error: line 18: SDP: `a=rtpmap:8` names a format its `m=` line does not list (would answer 488)",
        ],
        "{text}"
    );
    // JSON: the first (the stack's answer) and every one
    let out = run(&["msg", "check", "--json", "-"], BAD.as_bytes());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["status"], 400);
    assert_eq!(v["line"], 3);
    assert_eq!(v["errors"].as_array().unwrap().len(), 7);
    assert_eq!(v["errors"][6]["line"], 18);
    assert_eq!(v["errors"][6]["status"], 488);
}

/// A message around an SDP body (Content-Length right).
fn with_sdp(sdp: &str) -> String {
    format!(
        "INVITE sip:bob@example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.test>;tag=1\r\n\
         To: <sip:bob@example.test>\r\n\
         Call-ID: sdp@y\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@192.0.2.1>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

#[test]
fn a_good_offer_passes_and_one_the_stack_cannot_answer_says_why() {
    let good = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";
    let out = run(&["msg", "check", "-"], with_sdp(good).as_bytes());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // grammatical, but no codec in common (G.729 only)
    let g729 = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    let out = run(&["msg", "check", "-"], with_sdp(g729).as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("SDP: as an offer: no codec in common (would answer 488)"),
        "{text}"
    );
    // bad grammar: a space after `=`, a c= that is no address, v= not first
    let bad = "o=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\ns= -\r\nc=IN IP4 999.1.1.1\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0\r\n";
    let out = run(&["msg", "check", "-"], with_sdp(bad).as_bytes());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "line 12: SDP: the first line must be `v=0`",
        "line 13: SDP: `v=` must be the first line",
        "line 14: SDP: space after `s=`",
        "line 15: SDP: \"999.1.1.1\" is not an IPv4 address",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}
