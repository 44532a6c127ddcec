//! Two `siproam registrar` processes sharing one Redis (`--store
//! redis://…`): a user registered at one is reached through the other, a
//! binding's key lapses in Redis with its lifetime, and with Redis gone a
//! REGISTER gets 503 rather than hanging.
//!
//! Needs `redis-server` and `redis-cli` (Debian package `redis-server`,
//! installed by `interop/install.sh`); each test starts its own server on
//! a free loopback port, with no persistence. Without it the tests say
//! why they are skipped; with `SIPROAM_REQUIRE_INTEROP=1` (CI) they fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::time::{Duration, Instant};

fn have_redis() -> bool {
    Redis::available()
}

fn registrar(url: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "registrar",
        "--json",
        "--listen",
        "udp:127.0.0.1:0",
        "--store",
        url,
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    let addr = p.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    (p, format!("sip:{addr}"))
}

fn agent(aor: &str, registrar: &str, ip: &str, extra: &[&str]) -> Proc {
    let listen = format!("udp:{ip}:0");
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        aor,
        "--registrar",
        registrar,
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args)
}

fn registered(p: &Proc, who: &str) -> serde_json::Value {
    p.wait_for(&format!("{who} registered"), |v| {
        v["event"] == "registration" && v["state"] == "registered"
    })
}

#[test]
fn a_user_registered_at_one_registrar_is_reached_through_the_other() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start();
    let url = redis.url();
    let (_reg1, uri1) = registrar(&url, &[]);
    let (_reg2, uri2) = registrar(&url, &[]);
    let alice = agent(
        "sip:alice@example.test",
        &uri1,
        "127.0.0.2",
        &["--auto-answer"],
    );
    let r = registered(&alice, "alice");
    assert_eq!(r["code"], 200);
    let contact = r["contact"].as_str().unwrap().to_owned();
    // the 2xx came after Redis had the binding
    let record = redis.cli(&["GET", "siproam:loc:alice@example.test"]);
    assert!(record.contains(&contact), "{record}");
    // Bob registers at the other registrar and calls Alice through it
    let mut bob = agent("sip:bob@example.test", &uri2, "127.0.0.3", &[]);
    registered(&bob, "bob");
    bob.send("call sip:alice@example.test");
    bob.wait_for("bob's call confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    alice.wait_for("alice's call confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    // Redis away: a REGISTER is answered 503, not left hanging
    redis.stop();
    let carol = agent("sip:carol@example.test", &uri1, "127.0.0.4", &[]);
    let failed = carol.wait_for("carol's registration answered", |v| {
        v["event"] == "registration" && v["code"].as_u64().is_some_and(|c| c >= 300)
    });
    assert_eq!(failed["code"], 503, "{failed}");
}

#[test]
fn a_binding_lapses_in_redis_with_its_lifetime() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let (_reg1, uri1) = registrar(&redis.url(), &["--min-expires", "1"]);
    let alice = agent(
        "sip:alice@example.test",
        &uri1,
        "127.0.0.2",
        &["--expires", "4"],
    );
    let r = registered(&alice, "alice");
    assert_eq!(r["expires"], 4);
    let ttl: i64 = redis
        .cli(&["PTTL", "siproam:loc:alice@example.test"])
        .parse()
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 4000,
        "the key lives as long as the binding: {ttl} ms"
    );
    // the agent dies without unregistering: nothing refreshes the binding
    drop(alice);
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.cli(&["EXISTS", "siproam:loc:alice@example.test"]) != "0" {
        assert!(Instant::now() < deadline, "the key never lapsed");
        std::thread::sleep(Duration::from_millis(200));
    }
}
