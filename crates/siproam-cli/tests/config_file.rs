//! One `--config` file for everything: several `[[account]]`s, the call
//! options in `[call]`, the registrar's and the edge's own tables, unknown
//! keys refused, flags winning over the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

/// One file for the registrar and the agent: the registrar takes its
/// `[registrar]` table (its own port, `min-expires`), the agent its two
/// `[[account]]`s and ignores `[registrar]`; `--expires` on the command
/// line beats the first account's.
#[test]
fn two_accounts_register_both_and_the_registrar_takes_its_table() {
    let dir = temp_dir("config-accounts");
    let port = free_port(0);
    let cfg = dir.join("siproam.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"json = true
listen = ["udp:127.0.0.21:0"]
no-watch = true

[registrar]
listen = ["udp:127.0.0.1:{port}"]
min-expires = 400

[edge]
aggressive-gc = true

[[account]]
aor = "sip:alice@example.test"
registrar = "sip:127.0.0.1:{port}"
expires = 300

[[account]]
aor = "sip:bob@example.test"
registrar = "sip:127.0.0.1:{port}"
expires = 300
"#
        ),
    )
    .unwrap();
    let registrar = Proc::spawn(&["registrar", "--config", cfg.to_str().unwrap()]);
    assert_eq!(
        listening(&registrar, "udp"),
        format!("127.0.0.1:{port}"),
        "the registrar listens where its table says"
    );
    let agent = Proc::spawn(&[
        "agent",
        "--config",
        cfg.to_str().unwrap(),
        "--expires",
        "450",
    ]);
    for user in ["alice", "bob"] {
        registrar.seen_or_wait(&format!("{user}'s binding"), |v| {
            v["event"] == "binding"
                && v["aor"] == format!("sip:{user}@example.test")
                && v["contacts"].as_array().is_some_and(|c| {
                    c.iter().any(|b| {
                        b["contact"]
                            .as_str()
                            .is_some_and(|s| s.starts_with(&format!("sip:{user}@127.0.0.21:")))
                    })
                })
        });
    }
    // alice: the flag's 450; bob: his 300, raised to the registrar's
    // min-expires (423 then 400)
    let expires = |user: &str| {
        let ev = agent.seen_or_wait(&format!("{user} registered"), |v| {
            v["event"] == "registration"
                && v["state"] == "registered"
                && v["contact"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&format!("sip:{user}@")))
        });
        // each account's event names its own address of record
        assert_eq!(ev["aor"], format!("sip:{user}@example.test"), "{ev}");
        ev["expires"].clone()
    };
    assert_eq!(expires("alice"), 450);
    assert_eq!(expires("bob"), 400);
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}

/// `[call]`: bob's agent answers by itself and records, alice's plays the
/// tone her file names.
#[test]
fn call_options_from_the_file_take_effect() {
    let dir = temp_dir("config-call");
    let wav = dir.join("bob.wav");
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let reg = format!("sip:{}", listening(&registrar, "udp"));
    let bob_cfg = dir.join("bob.toml");
    std::fs::write(
        &bob_cfg,
        format!(
            "json = true\nno-watch = true\nlisten = [\"udp:127.0.0.23:0\"]\n\
             [[account]]\naor = \"sip:bob@example.test\"\nregistrar = \"{reg}\"\n\
             [call]\nauto-answer = true\nplay = \"tone:440\"\nrecord = {:?}\n",
            wav.to_str().unwrap()
        ),
    )
    .unwrap();
    let alice_cfg = dir.join("alice.toml");
    std::fs::write(
        &alice_cfg,
        format!(
            "json = true\nno-watch = true\nlisten = [\"udp:127.0.0.22:0\"]\n\
             aor = \"sip:alice@example.test\"\nregistrar = \"{reg}\"\n\
             [call]\nplay = \"tone:700\"\n"
        ),
    )
    .unwrap();
    let mut bob = Proc::spawn(&["agent", "--config", bob_cfg.to_str().unwrap()]);
    bob.wait_registered("bob");
    let mut alice = Proc::spawn(&["agent", "--config", alice_cfg.to_str().unwrap()]);
    alice.wait_registered("alice");
    alice.send("call sip:bob@example.test");
    // nobody types `answer` at bob's
    alice.wait_call("alice", "confirmed");
    bob.wait_call("bob", "confirmed");
    bob.wait_for("bob's media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 60
    });
    alice.send("hangup");
    bob.wait_for("bob final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    bob.send("quit");
    let _ = bob.child.wait();
    assert_tone(&wav, 700.0);
    alice.quit();
    let _ = std::fs::remove_dir_all(dir);
}

/// `siproam CMD --config FILE`'s exit code and stderr.
fn refused(cmd: &str, file: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args([cmd, "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_key_in_any_table_is_refused_naming_it_and_the_file() {
    let dir = temp_dir("config-unknown");
    let f = dir.join("bad.toml");
    for (text, key) in [
        ("[registrar]\nmin-expire = 60\n", "min-expire"),
        ("[edge]\nflow-grays = 3\n", "flow-grays"),
        ("[call]\nauto-anwser = true\n", "auto-anwser"),
        (
            "[[account]]\naor = \"sip:a@example.test\"\npasword = \"x\"\n",
            "pasword",
        ),
        ("[colour]\nred = 1\n", "colour"),
    ] {
        std::fs::write(&f, text).unwrap();
        // every command refuses it, not only the one whose table it is
        for cmd in ["agent", "registrar", "edge"] {
            let (code, err) = refused(cmd, &f);
            assert_eq!(code, Some(2), "{cmd} with {text:?}: {err}");
            assert!(err.contains(key), "{cmd}: {err}");
            assert!(err.contains("bad.toml"), "{cmd}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The single-account keys at the top level and `[[account]]` tables
/// together are refused: which one would be the first is not clear.
#[test]
fn top_level_account_keys_and_account_tables_are_refused_together() {
    let dir = temp_dir("config-both");
    let f = dir.join("both.toml");
    std::fs::write(
        &f,
        "aor = \"sip:a@example.test\"\n[[account]]\naor = \"sip:b@example.test\"\n",
    )
    .unwrap();
    let (code, err) = refused("agent", &f);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot go together") && err.contains("aor"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `trace = true` in the file prints the SIP as `--trace` does.
#[test]
fn trace_from_the_file() {
    let dir = temp_dir("config-trace");
    let f = dir.join("trace.toml");
    std::fs::write(
        &f,
        "trace = true\nno-watch = true\nlisten = [\"udp:127.0.0.24:0\"]\n\
         aor = \"sip:carol@example.test\"\nregistrar = \"sip:127.0.0.1:9\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["agent", "--config", f.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // stderr read on a thread; the REGISTER goes out at once
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("REGISTER sip:127.0.0.1 SIP/2.0") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no REGISTER traced: {}", seen.join("\n"));
    let _ = std::fs::remove_dir_all(dir);
}
