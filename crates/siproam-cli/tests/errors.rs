//! Errors that say what happened (issue 15): `siproam call` exits 1 with
//! the reason when the call fails, bad usage is refused at once with exit
//! 2, each error is printed once and names what failed, wrong
//! credentials are told as such, an unreachable registrar shows its
//! retransmissions, SIGTERM unregisters, and a closed stdout ends quietly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `siproam ARGS` with stdin, stdout and stderr piped and its own state
/// directory.
fn spawn_piped(args: &[&str]) -> Child {
    let state = temp_dir(&format!("state-{}", args.join("-").len()));
    Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(args)
        .env("XDG_STATE_HOME", &state)
        .env_remove("RUST_LOG")
        .env_remove(siproam_password_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn siproam_password_env() -> &'static str {
    "SIPROAM_PASSWORD"
}

/// Waits (up to `secs`) for the child to exit; kills it and panics
/// naming `what` past that.
fn wait_exit(child: &mut Child, secs: u64, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything the child wrote on stderr (after it exited).
fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// `line` without terminal colour codes (`ESC [ … m`).
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The stderr lines of a running child (colour codes taken out), on a
/// channel.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(plain(&line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads stderr lines until one matches `pred` (bounded: `secs`); all
/// lines read, the matching one last.
fn wait_stderr(
    rx: &mpsc::Receiver<String>,
    secs: u64,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = pred(&line);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!(
                "no {what} on stderr within {secs} s; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn listening_udp(p: &Proc) -> String {
    p.wait_for("udp listener", |v| {
        v["event"] == "listening" && v["transport"] == "udp"
    })["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A registrar for example.test on a loopback UDP port (with digest
/// users when `users` is given).
fn registrar(users: Option<&str>) -> (Proc, String) {
    let mut args = vec![
        "registrar",
        "--json",
        "--listen",
        "udp:127.0.0.1:0",
        "--domain",
        "example.test",
    ];
    let path;
    if let Some(u) = users {
        let dir = temp_dir("errors-users");
        path = dir.join(format!("users-{}.txt", u.len()));
        std::fs::write(&path, u).unwrap();
        args.extend_from_slice(&["--users", path.to_str().unwrap()]);
    }
    let p = Proc::spawn(&args);
    let addr = listening_udp(&p);
    (p, addr)
}

/// `siproam call` to a user nobody registered: the registrar answers 404,
/// and the call exits 1 at once naming it (the generous deadline only
/// bounds a hang).
#[test]
fn a_call_to_an_unknown_user_exits_1_naming_404() {
    let (_registrar, addr) = registrar(None);
    let reg = format!("sip:{addr}");
    let err = failed_call("sip:nobody@example.test", &reg, "its 404");
    assert!(err.contains("404"), "stderr: {err}");
}

/// `siproam call` from Alice to `callee` through `reg`: it must exit 1
/// with its failure said once; its stderr.
fn failed_call(callee: &str, reg: &str, what: &str) -> String {
    let mut call = spawn_piped(&[
        "call",
        callee,
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        reg,
        "--listen",
        "udp:127.0.0.1:0",
        "--no-watch",
    ]);
    let status = wait_exit(&mut call, 30, &format!("siproam call after {what}"));
    let err = stderr_of(&mut call);
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("call failed"), "stderr: {err}");
    assert_eq!(err.matches("call failed").count(), 1, "stderr: {err}");
    err
}

/// `siproam call` to a registered user who is busy (`--max-ringing 0`:
/// every INVITE gets 486): exit 1 naming the 486.
#[test]
fn a_call_to_a_busy_user_exits_1_naming_486() {
    let (registrar, addr) = registrar(None);
    let reg = format!("sip:{addr}");
    let bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.1:0",
        "--no-watch",
        "--max-ringing",
        "0",
    ]);
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    registrar.wait_for("bob's binding", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
    });
    let err = failed_call("sip:bob@example.test", &reg, "its 486");
    assert!(err.contains("call failed: 486 Busy Here"), "stderr: {err}");
}

/// Each bad-usage case is refused before anything starts: exit 2 and a
/// message naming what is wrong.
#[test]
fn bad_usage_is_refused_with_exit_2_and_a_message() {
    let dir = temp_dir("errors-usage");
    let not_wav = dir.join("not.wav");
    std::fs::write(&not_wav, "this is no WAV file").unwrap();
    let not_wav = not_wav.to_str().unwrap().to_owned();
    let no_dir = dir.join("no-such-dir").join("out.wav");
    let no_dir = no_dir.to_str().unwrap().to_owned();
    let aor = ["--aor", "sip:alice@example.test"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&["call", "bob@example.test"][..], &aor[..]].concat(),
            "call bob@example.test: not a SIP URI (sip:bob@example.test?)",
        ),
        (
            vec!["agent", "--aor", "alice@example.test"],
            "--aor alice@example.test: not a sip: or sips: URI with a user",
        ),
        (
            vec!["agent", "--aor", "sip:example.test"],
            "--aor sip:example.test: not a sip: or sips: URI with a user",
        ),
        (
            [&["agent", "--registrar", "example.test"][..], &aor[..]].concat(),
            "--registrar example.test: not a SIP URI",
        ),
        (
            [&["agent", "--play", "/no/such/file.wav"][..], &aor[..]].concat(),
            "--play /no/such/file.wav: cannot read it",
        ),
        (
            [&["agent", "--play", &not_wav][..], &aor[..]].concat(),
            "not a WAV file siproam can play",
        ),
        (
            [&["agent", "--record", &no_dir][..], &aor[..]].concat(),
            "the directory does not exist",
        ),
        (
            [&["agent", "--listen", "udp:localhost"][..], &aor[..]].concat(),
            "--listen udp:localhost: bad address",
        ),
        (
            vec!["registrar", "--listen", "sctp:127.0.0.1:5060"],
            "--listen sctp:127.0.0.1:5060: unknown transport",
        ),
        (
            [&["agent", "--host", "registrar.test"][..], &aor[..]].concat(),
            "--host expects NAME=IP",
        ),
        (vec!["agent"], "--aor is required"),
        (vec!["call", "sip:bob@example.test"], "--aor is required"),
    ];
    for (args, want) in cases {
        let mut p = spawn_piped(&args);
        drop(p.stdin.take());
        let status = wait_exit(&mut p, 30, &args.join(" "));
        let err = stderr_of(&mut p);
        let mut out = String::new();
        p.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        // refused before anything started
        assert!(!out.contains("listening"), "{args:?}: {out}");
    }
}

/// The agent's stdin `call` without a scheme: an `error` event saying so,
/// nothing sent.
#[test]
fn a_stdin_call_without_a_scheme_is_an_error_event() {
    let mut agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--listen",
        "udp:127.0.0.1:0",
        "--no-watch",
    ]);
    listening_udp(&agent);
    agent.send("call bob@example.test");
    let e = agent.wait_for("error", |v| v["event"] == "error" || v["event"] == "call");
    assert_eq!(e["event"], "error", "{e}");
    assert_eq!(e["command"], "call");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("bob@example.test: not a SIP URI"),
        "{e}"
    );
}

/// A port already taken: the message names it and the cause, once.
#[test]
fn an_address_in_use_is_named_once() {
    let (_first, addr) = registrar(None);
    let listen = format!("udp:{addr}");
    let mut second = spawn_piped(&["registrar", "--listen", &listen]);
    let status = wait_exit(&mut second, 30, "a registrar on a port in use");
    let err = stderr_of(&mut second);
    assert_eq!(status.code(), Some(1), "{err}");
    let want = format!("cannot listen on {listen}: address already in use");
    assert!(err.contains(&want), "want {want:?} in: {err}");
    assert_eq!(err.matches("already in use").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A wrong password: the registrar's second 401 is told as refused
/// credentials, once.
#[test]
fn a_wrong_password_says_the_credentials_were_refused() {
    let (_registrar, addr) = registrar(Some("alice:alicepw\n"));
    let reg = format!("sip:{addr}");
    let mut agent = spawn_piped(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &reg,
        "--password",
        "wrong",
        "--listen",
        "udp:127.0.0.1:0",
        "--no-watch",
    ]);
    let rx = stderr_lines(&mut agent);
    let seen = wait_stderr(&rx, 60, "refused credentials", |l| {
        l.contains("registration refused")
    });
    let line = seen.last().unwrap();
    assert!(
        line.contains("the registrar rejected user alice's credentials (401: wrong password?)"),
        "{line}"
    );
    // nothing else said about it before, and nothing again right after
    drop(agent.stdin.take());
    let _ = wait_exit(&mut agent, 30, "the agent after stdin closed");
    let rest: Vec<String> = rx.try_iter().collect();
    let all: Vec<&String> = seen.iter().chain(rest.iter()).collect();
    let told = all
        .iter()
        .filter(|l| l.contains("credentials") || l.contains("authentication failed"))
        .count();
    assert_eq!(told, 1, "{all:?}");
}

/// No registrar at that address: at -v each retransmission of the
/// REGISTER is logged (method, attempt, next interval), then the failure
/// is said plainly. The transaction timeout is 64*T1 = 32 s: the deadline
/// is generous.
#[test]
fn an_unreachable_registrar_shows_retransmissions_then_the_failure() {
    let port = free_port(0);
    let reg = format!("sip:127.0.0.1:{port}");
    let mut agent = spawn_piped(&[
        "agent",
        "-v",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.1:0",
        "--no-watch",
    ]);
    let rx = stderr_lines(&mut agent);
    let seen = wait_stderr(&rx, 90, "the registration failure", |l| {
        l.contains("registration failed")
    });
    let retrans: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("retransmit") && l.contains("REGISTER"))
        .collect();
    // T1 doubling up to T2 within 32 s: 0.5, 1, 2, 4, 4, … → at least 6
    assert!(retrans.len() >= 6, "{seen:#?}");
    assert!(retrans[0].contains("attempt=2"), "{}", retrans[0]);
    assert!(retrans[0].contains("next_ms=1000"), "{}", retrans[0]);
    // no URI at info
    assert!(!retrans.iter().any(|l| l.contains("alice")), "{retrans:#?}");
    let last = seen.last().unwrap();
    let want = format!("registration failed: no answer from 127.0.0.1:{port} (timeout after 32 s)");
    assert!(last.contains(&want), "want {want:?}: {last}");
}

/// SIGTERM to an agent: it unregisters, as on Ctrl-C, and exits 0.
#[test]
fn sigterm_unregisters_the_agent() {
    let (registrar, addr) = registrar(None);
    let reg = format!("sip:{addr}");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.1:0",
        "--no-watch",
        "--stay",
    ]);
    agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    registrar.wait_for("binding", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
    });
    let pid = agent.child.id().to_string();
    let mut agent = agent;
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    registrar.wait_for("binding removed", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| c.is_empty())
    });
    let status = wait_exit(&mut agent.child, 30, "the agent after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// SIGTERM to a registrar: it stops cleanly (exit 0), as on Ctrl-C.
#[test]
fn sigterm_stops_the_registrar_cleanly() {
    let (mut registrar, _addr) = registrar(None);
    let pid = registrar.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut registrar.child, 30, "the registrar after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// `siproam demo --json | head -1`: the reader goes away after one line;
/// the demo ends without a panic.
#[test]
fn a_closed_stdout_ends_quietly() {
    let mut demo = spawn_piped(&["demo", "--json"]);
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with('{'), "{first}");
    drop(out);
    let status = wait_exit(&mut demo, 120, "the demo after its reader left");
    let err = stderr_of(&mut demo);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    assert!(status.code().is_some(), "killed by a signal: {status:?}");
}

/// An agent whose stdout reader went away: it goes on quietly until told
/// to quit, then exits without a panic.
#[test]
fn an_agent_whose_stdout_reader_left_quits_quietly() {
    let mut agent = spawn_piped(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--listen",
        "udp:127.0.0.1:0",
        "--no-watch",
    ]);
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    drop(out);
    let mut stdin = agent.stdin.take().unwrap();
    // events written to the closed pipe
    let _ = writeln!(stdin, "status");
    let _ = writeln!(stdin, "status");
    let _ = writeln!(stdin, "quit");
    drop(stdin);
    let status = wait_exit(&mut agent, 30, "the agent after quit");
    let err = stderr_of(&mut agent);
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.code().is_some(), "killed by a signal: {status:?}");
}
