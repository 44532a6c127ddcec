//! Network changes on real (namespaced) networks, detected by the agent on
//! its own: no `ip-change` is ever typed. Each test builds its own
//! namespaces: a handset with two uplinks (wifi, cell) routed through a
//! router namespace to a server namespace where `siproam registrar` and
//! Bob's agent run; Alice's agent runs in the handset, registers, calls
//! Bob, and the test changes the handset's network under her.
//!
//! Needs root (namespaces, veth): without it each test says it is skipped;
//! CI (root, SIPROAM_REQUIRE_INTEROP set) requires them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::netns::*;
use common::*;

use std::process::Command;

/// Break-before-make: the wifi address is removed; Alice notices, moves to
/// the cell address, re-registers, refreshes the call, media resumes.
#[test]
fn wifi_address_removed_then_cell_used() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("b");
    let (registrar, bob, alice, before) = call_over_wifi(&t);
    del_addr(&t, "10.1.0.2/24", "wifi0");
    alice.wait_for("the monitor saw the address go", |v| {
        v["event"] == "network" && v["kind"] == "address_removed" && v["address"] == WIFI
    });
    check_moved(&t, &registrar, &bob, &alice, &before, CELL, 3);
}

/// Break-before-make with the change typed late (`--no-watch`): the wifi
/// address is removed and `ip-change` comes 100 ms after, so the frames due
/// in between cannot leave from the removed address. They go out from the
/// cell address once the media moves: Bob misses none (before the fix they
/// were dropped and still counted as sent).
#[test]
fn frames_due_while_the_old_address_is_gone_leave_from_the_new_one() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("s");
    let o = Options {
        alice_args: vec!["--no-watch".into()],
        ..Options::default()
    };
    let (registrar, bob, mut alice, before) = call_over_wifi_with(&t, &o);
    del_addr(&t, "10.1.0.2/24", "wifi0");
    // a few 20 ms frames fall due with no address to leave from
    std::thread::sleep(std::time::Duration::from_millis(100));
    alice.send(&format!("ip-change {CELL}"));
    // Bob's stream from Alice has no hole; Alice loses what Bob sent to
    // the removed address before he learnt the new one
    let lost_ok = |report: &serde_json::Value| {
        let lost = report["lost"].as_u64().unwrap();
        if report["local"].as_str().unwrap().starts_with(SERVER) {
            lost == 0
        } else {
            lost <= 10
        }
    };
    check_moved_with(&t, &registrar, &bob, &alice, &before, CELL, &lost_ok);
}

/// Make-before-break: cell becomes the preferred uplink while wifi still
/// works; Alice moves over cell first, the old path keeps receiving until
/// Bob follows: no packet lost.
#[test]
fn cell_preferred_while_wifi_still_works() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("m");
    let (registrar, bob, alice, before) = call_over_wifi(&t);
    ip(&[
        "-n", &t.handset, "route", "add", "default", "via", "10.2.0.1", "dev", "cell0", "metric",
        "50",
    ]);
    alice.wait_for("the monitor saw the route change", |v| {
        v["event"] == "network" && v["kind"] == "route_changed"
    });
    check_moved(&t, &registrar, &bob, &alice, &before, CELL, 0);
}

/// Roaming: a new address on the same link (the old one removed, the new
/// one promoted); Alice follows it.
#[test]
fn a_new_address_on_the_same_link() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("r");
    let (registrar, bob, alice, before) = call_over_wifi(&t);
    ip(&[
        "-n",
        &t.handset,
        "addr",
        "add",
        "10.1.0.3/24",
        "dev",
        "wifi0",
    ]);
    del_addr(&t, "10.1.0.2/24", "wifi0");
    check_moved(&t, &registrar, &bob, &alice, &before, "10.1.0.3", 3);
}

/// The wifi link goes down without its address being removed: the routes
/// over it go, Alice moves to cell.
#[test]
fn a_link_that_goes_down_with_its_address_kept() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("l");
    let (registrar, bob, alice, before) = call_over_wifi(&t);
    ip(&["-n", &t.handset, "link", "set", "wifi0", "down"]);
    alice.wait_for("the monitor saw the link go down", |v| {
        v["event"] == "network" && v["kind"] == "link_down" && v["interface"] == "wifi0"
    });
    check_moved(&t, &registrar, &bob, &alice, &before, CELL, 3);
}

/// IPv4 → IPv6: both IPv4 addresses go, IPv6 is left; the account moves to
/// the registrar's IPv6 address by itself and the call's media to IPv6.
#[test]
fn ipv4_to_ipv6() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("6");
    let (registrar, bob, alice, before) = call_over_wifi_with(
        &t,
        &Options {
            dual_stack: true,
            ..Options::default()
        },
    );
    del_addr(&t, "10.2.0.2/24", "cell0");
    del_addr(&t, "10.1.0.2/24", "wifi0");
    check_moved(&t, &registrar, &bob, &alice, &before, "fd01::2", 3);
}

/// IPv6 → IPv4: Alice prefers IPv6 and calls over it; both IPv6 addresses
/// go, IPv4 is left; the account moves to the registrar's IPv4 address
/// and the call's media to IPv4, by themselves.
#[test]
fn ipv6_to_ipv4() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("4");
    let (registrar, bob, alice, before) = call_over_wifi_with(
        &t,
        &Options {
            dual_stack: true,
            alice_prefers_ipv6: true,
            ..Options::default()
        },
    );
    del_addr(&t, "fd02::2/64", "cell0");
    del_addr(&t, "fd01::2/64", "wifi0");
    check_moved(&t, &registrar, &bob, &alice, &before, WIFI, 3);
}

/// Ten flaps of the wifi link in a row: whatever runs while it flaps, Alice
/// ends on cell (wifi's default route is gone once it came back), with the
/// binding, the call and the media there.
#[test]
fn ten_flaps_in_a_row() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("f");
    let (registrar, bob, alice, before) = call_over_wifi(&t);
    for _ in 0..10 {
        ip(&["-n", &t.handset, "link", "set", "wifi0", "down"]);
        ip(&["-n", &t.handset, "link", "set", "wifi0", "up"]);
    }
    check_moved(&t, &registrar, &bob, &alice, &before, CELL, 10);
}

/// A change while a call to Alice is still ringing (break-before-make:
/// the wifi address is gone): she answers afterwards, her 2xx carries the
/// new Contact, the call is confirmed with media both ways on cell.
#[test]
fn a_change_while_a_call_to_us_rings() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("i");
    let (registrar, mut bob, mut alice) = start(&t, &Options::default());
    bob.send("call sip:alice@example.test");
    alice.wait_for("alice rings", |v| {
        v["event"] == "call" && v["state"] == "incoming"
    });
    del_addr(&t, "10.1.0.2/24", "wifi0");
    let done = alice.wait_for("the change", |v| {
        v["event"] == "ip_change" && v["stage"] == "completed"
    });
    assert_eq!(done["status"], "ok");
    wait_binding(&registrar, CELL);
    alice.send("answer");
    bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    ringing_call_media_on_cell(&bob, &alice);
    check_listeners(&t, &alice, CELL);
}

/// A change while Alice's call is still ringing at Bob (make-before-break:
/// cell preferred while wifi works): her early dialog gets an UPDATE with
/// the new Contact, Bob answers, the media is re-offered on cell.
#[test]
fn a_change_while_our_call_rings() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("g");
    let (registrar, mut bob, mut alice) = start(
        &t,
        &Options {
            bob_rings: true,
            ..Options::default()
        },
    );
    alice.send("call sip:bob@example.test");
    bob.wait_for("bob rings", |v| {
        v["event"] == "call" && v["state"] == "incoming"
    });
    alice.wait_for("alice hears it ring", |v| {
        v["event"] == "call" && v["state"] == "ringing"
    });
    ip(&[
        "-n", &t.handset, "route", "add", "default", "via", "10.2.0.1", "dev", "cell0", "metric",
        "50",
    ]);
    let done = alice.wait_for("the change", |v| {
        v["event"] == "ip_change" && v["stage"] == "completed"
    });
    assert_eq!(done["status"], "ok");
    wait_binding(&registrar, CELL);
    bob.send("answer");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    ringing_call_media_on_cell(&bob, &alice);
    check_listeners(&t, &alice, CELL);
}

/// Break-before-make while Alice's call still rings at Bob: the wifi
/// address goes, so Bob's answer to her INVITE would follow its Via to an
/// address she no longer has. Alice CANCELs it and calls again from cell
/// (a new INVITE, the same call for her); Bob's old call ends 487, the new
/// one rings, he answers it, and the call is confirmed at Alice with media
/// both ways on cell, her call never having failed.
#[test]
fn a_break_before_make_while_our_call_rings() {
    break_before_make_while_our_call_rings("r", false);
}

/// The same with Alice over TCP: her INVITE's connection closes with the
/// wifi address (the call outlives it), the new INVITE goes over a new
/// connection from cell.
#[test]
fn a_break_before_make_while_our_call_rings_over_tcp() {
    break_before_make_while_our_call_rings("rt", true);
}

fn break_before_make_while_our_call_rings(tag: &str, over_tcp: bool) {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new(tag);
    let (registrar, mut bob, mut alice) = start(
        &t,
        &Options {
            bob_rings: true,
            alice_over_tcp: over_tcp,
            ..Options::default()
        },
    );
    alice.send("call sip:bob@example.test");
    let first = bob.wait_for("bob rings", |v| {
        v["event"] == "call" && v["state"] == "incoming"
    });
    alice.wait_for("alice hears it ring", |v| {
        v["event"] == "call" && v["state"] == "ringing"
    });
    del_addr(&t, "10.1.0.2/24", "wifi0");
    let done = alice.wait_for("the change", |v| {
        v["event"] == "ip_change" && v["stage"] == "completed"
    });
    assert_eq!(done["status"], "ok");
    wait_binding(&registrar, CELL);
    // the INVITE sent again rings at Bob as a new call
    let second = bob.wait_for("the new INVITE rings", |v| {
        v["event"] == "call" && v["state"] == "incoming" && v["call"] != first["call"]
    });
    bob.send(&format!("answer {}", second["call"]));
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    ringing_call_media_on_cell(&bob, &alice);
    // the CANCEL reached Bob (before the new INVITE): the old INVITE
    // does not ring on
    bob.drain();
    assert!(
        bob.seen().iter().any(|v| v["event"] == "call"
            && v["state"] == "disconnected"
            && v["call"] == first["call"]
            && v["code"] == 487),
        "bob's first call ended 487"
    );
    assert_no_call_ended(&[&alice]);
    let calls: Vec<_> = alice
        .seen()
        .into_iter()
        .filter(|v| v["event"] == "call")
        .map(|v| (v["call"].clone(), v["state"].clone()))
        .collect();
    let one = &calls[0].0;
    assert!(calls.iter().all(|(c, _)| c == one), "one call: {calls:?}");
    check_listeners(&t, &alice, CELL);
}

fn ringing_call_media_on_cell(bob: &Proc, alice: &Proc) {
    bob.wait_for("bob hears alice on cell", |v| {
        v["event"] == "media"
            && v["remote"].as_str().is_some_and(|r| r.starts_with(CELL))
            && v["rx_packets"].as_u64().unwrap_or(0) > 25
    });
    alice.wait_for("alice hears bob on cell", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with(CELL))
            && v["rx_packets"].as_u64().unwrap_or(0) > 25
    });
}

/// A change while a re-INVITE is pending: the wifi path dies (the router's
/// side of the link goes down), Alice puts Bob on hold (the re-INVITE is
/// stuck), then the wifi address goes. The stuck re-INVITE is CANCELled
/// and settles (its retransmissions now leave over cell), the call is
/// re-offered from cell with no help, and resumes both ways there.
#[test]
fn a_change_while_a_reinvite_is_pending() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("p");
    let (registrar, bob, mut alice, before) = call_over_wifi(&t);
    ip(&["-n", &t.router, "link", "set", "rwifi", "down"]);
    alice.send("hold");
    del_addr(&t, "10.1.0.2/24", "wifi0");
    let done = alice.wait_for("the change", |v| {
        v["event"] == "ip_change" && v["stage"] == "completed"
    });
    assert_eq!(done["status"], "ok");
    wait_binding(&registrar, CELL);
    // the re-offer from cell reached Bob (Alice still holds: she sends)
    bob.wait_for("bob hears alice on cell", |v| {
        v["event"] == "media"
            && v["remote"].as_str().is_some_and(|r| r.starts_with(CELL))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["rx_packets"].as_u64().unwrap() + 25
    });
    // resume; refused while a re-offer is still out, then retried
    let mut resumed = false;
    for _ in 0..20 {
        alice.send("unhold");
        let v = alice.wait_for("unhold's outcome", |v| {
            (v["event"] == "error" && v["command"] == "unhold")
                || (v["event"] == "media"
                    && v["local"].as_str().is_some_and(|l| l.starts_with(CELL))
                    && v["rx_packets"].as_u64().unwrap_or(0)
                        > before["tx_packets"].as_u64().unwrap() + 25)
        });
        if v["event"] == "media" {
            resumed = true;
            break;
        }
        bob.wait_for("bob's next media report", |v| v["event"] == "media");
    }
    assert!(resumed, "the call resumed both ways on cell");
    assert!(alice
        .seen()
        .iter()
        .all(|v| !(v["event"] == "call" && v["state"] == "disconnected")));
    check_listeners(&t, &alice, CELL);
}

/// `siproam bench handoff --netns` runs (one run of each kind) and
/// measures every stage of each hand-off (the figures themselves are the
/// benchmark's business, not a test's).
#[test]
fn the_netns_benchmark_measures_every_stage() {
    if !can_build_namespaces() {
        return;
    }
    let bench = Proc::spawn_program(
        env!("CARGO_BIN_EXE_siproam"),
        &["--json", "bench", "handoff", "--netns", "--runs", "1"],
    );
    for mode in ["break-before-make", "make-before-break"] {
        let v = bench.wait_for(mode, |v| {
            v["event"] == "bench" && v["mode"].as_str().is_some_and(|m| m.starts_with(mode))
        });
        for stage in [
            "detection_ms",
            "register_2xx_ms",
            "refresh_2xx_ms",
            "media_resumed_ms",
        ] {
            assert_eq!(v[stage]["n"], 1, "{stage} measured: {v}");
        }
        assert!(v["rtp_lost_total"].is_u64(), "{v}");
    }
}

// ----- interop: Kamailio as registrar and proxy, SIPp as the far end -----

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// wifi → cell with Kamailio as registrar and record-routing proxy and
/// SIPp (registered as bob, echoing RTP) as the far end; Alice's leg over
/// `transport`. Kamailio's location table must show Alice's new address
/// (over that transport), the call must survive and the echo come back on
/// the new address.
fn kamailio_sipp_wifi_to_cell(transport: &str) {
    if !can_build_namespaces() {
        return;
    }
    if !have("kamailio") || !have("kamcmd") || !have("sipp") {
        return;
    }
    let t = Topology::new(if transport == "tcp" { "kt" } else { "ku" });
    let kam = Kamailio::start_in(
        Some(&t.server),
        5060,
        &format!("-A SIP_ADDR={SERVER} -A NO_CALL_AUTH"),
        &format!("ns{}", t.tag),
    );
    let sipp_port = "5070";
    let reg = Command::new("ip")
        .args(["netns", "exec", &t.server, "sipp", "-sf"])
        .arg(repo().join("interop/sipp/register_auth.xml"))
        .args([
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "15s",
            "-timeout_error",
            "-au",
            "bob",
            "-ap",
            "bobpw",
            "-s",
            "bob",
            "-i",
            SERVER,
            "-p",
            sipp_port,
            "-t",
            "u1",
            &format!("{SERVER}:5060"),
        ])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(reg.status.success(), "SIPp registered bob at Kamailio");
    let _uas = Child(
        Command::new("ip")
            .args(["netns", "exec", &t.server, "sipp", "-sf"])
            .arg(repo().join("interop/sipp/uas_echo.xml"))
            .args([
                "-i",
                SERVER,
                "-p",
                sipp_port,
                "-mi",
                SERVER,
                "-mp",
                "6000",
                "-rtp_echo",
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "60s",
                "-timeout_error",
            ])
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let registrar = if transport == "tcp" {
        format!("sip:{SERVER}:5060;transport=tcp")
    } else {
        format!("sip:{SERVER}:5060")
    };
    let mut alice = t.spawn(
        &t.handset,
        &[
            "agent",
            "--json",
            "--aor",
            "sip:alice@example.test",
            "--password",
            "alicepw",
            "--registrar",
            &registrar,
            "--listen",
            "udp:0.0.0.0:0",
            "--listen",
            "tcp:0.0.0.0:0",
            "--play",
            "tone:1000",
        ],
    );
    alice.wait_for("alice registered at Kamailio", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let before = kam.bindings_with("alice@example.test", "Address,Socket,Received");
    assert!(
        before.len() == 1 && before[0].contains(WIFI),
        "Kamailio binds wifi: {before:?}"
    );
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let echo = alice.wait_for("SIPp echoes over wifi", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    del_addr(&t, "10.1.0.2/24", "wifi0");
    let done = alice.wait_for("the change", |v| {
        v["event"] == "ip_change" && v["stage"] == "completed"
    });
    assert_eq!(done["status"], "ok", "{done}");
    alice.seen_or_wait("re-registered from cell", |v| {
        v["event"] == "registration"
            && v["state"] == "registered"
            && v["contact"].as_str().is_some_and(|c| c.contains(CELL))
    });
    let after = kam.bindings_with("alice@example.test", "Address,Socket,Received");
    if std::env::var_os("NETNS_DEBUG").is_some() {
        eprintln!("kamailio bindings before {before:?} after {after:?}");
    }
    assert_eq!(after.len(), 1, "one binding, replaced: {after:?}");
    assert!(after[0].contains(CELL), "Kamailio binds cell: {after:?}");
    assert!(
        after[0].contains(&format!("{transport}:{SERVER}:5060")),
        "over {transport}: {after:?}"
    );
    alice.wait_for("the echo comes back on cell", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with(CELL))
            && v["rx_packets"].as_u64().unwrap_or(0) > echo["rx_packets"].as_u64().unwrap() + 25
    });
    alice.send("hangup");
    alice.wait_for("the call ends cleanly", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
}

#[test]
fn kamailio_and_sipp_wifi_to_cell_over_udp() {
    kamailio_sipp_wifi_to_cell("udp");
}

#[test]
fn kamailio_and_sipp_wifi_to_cell_over_tcp() {
    kamailio_sipp_wifi_to_cell("tcp");
}

// ----- a change that concerns one account of two -------------------------

/// Two accounts on one endpoint in the handset: one registers to the
/// server (over the default route: wifi), the other to a registrar on the
/// cell link itself (always reached over cell). When the wifi address goes
/// only the first account's path changed: only it moves (re-registers
/// from cell); the other is left alone (no REGISTER, no stage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_account_whose_path_changed_moves() {
    use siproam::core::{Config, Event, RegistrationState};
    use siproam::edge::RegistrarApp;
    use siproam::transport::Transport;
    use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, Ipv6Use};
    use siproam_edge::{Registrar, RegistrarConfig};
    use std::time::Duration;

    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("a");
    let ns = |name: &str| std::path::PathBuf::from(format!("/var/run/netns/{name}"));
    let registrar = |addr: &str| EndpointConfig {
        listen: vec![(Transport::Udp, addr.parse().unwrap())],
        core: Config {
            dialogs: false,
            ..Config::default()
        },
        ..Default::default()
    };
    let app = || {
        Box::new(RegistrarApp::new(
            Registrar::new(RegistrarConfig::default()),
        ))
    };
    let _server =
        EndpointHandle::start_in_netns(&ns(&t.server), registrar("10.9.0.2:5060"), app()).unwrap();
    let _cell_side =
        EndpointHandle::start_in_netns(&ns(&t.router), registrar("10.2.0.1:5060"), app()).unwrap();
    let mut ep = EndpointHandle::start_in_netns(
        &ns(&t.handset),
        EndpointConfig {
            listen: vec![(Transport::Udp, "0.0.0.0:0".parse().unwrap())],
            watch: Some(siproam::WatchConfig::default()),
            ..Default::default()
        },
        Box::new(siproam::UserAgent),
    )
    .unwrap();
    let spec = |aor: &str, registrar: &str| AccountSpec {
        aor: aor.into(),
        registrar: registrar.into(),
        username: None,
        password: None,
        instance_id: None,
        outbound: false,
        reg_id: None,
        expires: 600,
        ipv6_sip: Ipv6Use::Enabled,
        ipv6_media: Ipv6Use::Enabled,
        ip_change: None,
        flow: Default::default(),
    };
    let via_wifi = ep
        .register(spec("sip:alice@example.test", "sip:10.9.0.2:5060"))
        .await
        .unwrap();
    let on_cell = ep
        .register(spec("sip:alice2@example.test", "sip:10.2.0.1:5060"))
        .await
        .unwrap();
    let mut registered = std::collections::HashMap::new();
    let mut stages = Vec::new();
    let mut phase_two = false;
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ep.next_event().await {
                Some(EndpointEvent::Core(Event::Registration(r)))
                    if r.state == RegistrationState::Registered =>
                {
                    registered.insert(r.account, r.contact.clone());
                    if !phase_two && registered.len() == 2 {
                        assert!(registered[&via_wifi].contains(WIFI), "{registered:?}");
                        assert!(registered[&on_cell].contains(CELL), "{registered:?}");
                        phase_two = true;
                        del_addr(&t, "10.1.0.2/24", "wifi0");
                    } else if phase_two {
                        assert_eq!(
                            r.account, via_wifi,
                            "only the moved account registers: {r:?}"
                        );
                        assert!(r.contact.contains(CELL), "{r:?}");
                        if stages
                            .iter()
                            .any(|(s, _)| *s == siproam::IpChangeStage::Completed)
                        {
                            return;
                        }
                    }
                }
                Some(EndpointEvent::IpChange(c)) => {
                    assert_eq!(c.status, Ok(()), "{c:?}");
                    stages.push((c.stage, c.account));
                    if c.stage == siproam::IpChangeStage::Completed
                        && registered[&via_wifi].contains(CELL)
                    {
                        return;
                    }
                }
                Some(_) => {}
                None => panic!("the endpoint stopped"),
            }
        }
    })
    .await
    .expect("the change in time");
    let moved: Vec<u32> = stages
        .iter()
        .filter(|(s, _)| *s == siproam::IpChangeStage::UpdateContact)
        .filter_map(|(_, a)| a.map(|a| a.0))
        .collect();
    assert_eq!(moved, vec![via_wifi.0], "{stages:?}");
    assert!(registered[&on_cell].contains(CELL));
}

/// Make-before-break on one link: a new IPv6 address comes while the old
/// one still works, then the old one is deprecated (preferred lifetime 0,
/// as in renumbering) so the kernel prefers the new one: Alice moves to it
/// while the old still receives, with no packet lost.
#[test]
fn a_new_address_preferred_before_the_old_goes() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("n");
    let (registrar, bob, alice, before) = call_over_wifi_with(
        &t,
        &Options {
            dual_stack: true,
            alice_prefers_ipv6: true,
            ..Options::default()
        },
    );
    // the router reaches the new address without neighbour discovery (see
    // topology.sh), from the moment it exists
    let mac = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.handset,
            "cat",
            "/sys/class/net/wifi0/address",
        ])
        .output()
        .unwrap();
    let mac = String::from_utf8_lossy(&mac.stdout).trim().to_owned();
    ip(&[
        "-n",
        &t.router,
        "-6",
        "neigh",
        "replace",
        "fd01::3",
        "lladdr",
        &mac,
        "dev",
        "rwifi",
        "nud",
        "permanent",
    ]);
    ip(&[
        "-n",
        &t.handset,
        "addr",
        "add",
        "fd01::3/64",
        "dev",
        "wifi0",
        "nodad",
    ]);
    ip(&[
        "-n",
        &t.handset,
        "addr",
        "change",
        "fd01::2/64",
        "dev",
        "wifi0",
        "preferred_lft",
        "0",
    ]);
    check_moved(&t, &registrar, &bob, &alice, &before, "fd01::3", 0);
}
