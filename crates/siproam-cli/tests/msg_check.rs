//! `siproam msg check` as `cli.md` specifies it: exit status, text and
//! JSON output, on valid and invalid messages.

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
