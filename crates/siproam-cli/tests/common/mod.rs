//! Helpers shared by the CLI's integration tests: `siproam` child
//! processes read as JSON event streams, loopback ports, peers on PATH, and
//! a Goertzel filter to check tones.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub mod baresip;
pub mod netns;

/// A `siproam` child process whose JSON stdout lines arrive on a channel.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    /// Every event read so far, in order.
    history: std::cell::RefCell<Vec<Value>>,
    /// Its `XDG_STATE_HOME` (removed on drop).
    state: PathBuf,
}

/// A new empty directory for one process's state.
fn fresh_state_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("siproam-state-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Proc {
    /// Starts `siproam ARGS`.
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_program(env!("CARGO_BIN_EXE_siproam"), args)
    }

    /// Starts `siproam ARGS` with these environment variables set.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_command(env!("CARGO_BIN_EXE_siproam"), args, env)
    }

    /// Starts `PROGRAM ARGS` (e.g. `ip netns exec NS siproam …`), whose
    /// stdout is `siproam`'s JSON.
    pub fn spawn_program(program: &str, args: &[&str]) -> Proc {
        Proc::spawn_command(program, args, &[])
    }

    fn spawn_command(program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        // an agent keeps its instance id in its state directory: one of
        // its own per process (as a new random id before), not the home's
        let state = fresh_state_dir();
        let mut child = Command::new(program)
            .args(args)
            .env("XDG_STATE_HOME", &state)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Proc {
            child,
            stdin,
            lines: rx,
            history: std::cell::RefCell::new(Vec::new()),
            state,
        }
    }

    /// The next event matching `pred` (bounded wait: 30 s without any
    /// event, 120 s in all; panics naming `what`).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} within 120 s"
            );
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(v) => {
                    self.history.borrow_mut().push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(e) => panic!("no {what}: {e}"),
            }
        }
    }

    /// The last event already read that matches `pred`, else the next one
    /// (an event that may have come before the one waited for last).
    pub fn seen_or_wait(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = self
            .history
            .borrow()
            .iter()
            .rev()
            .find(|v| pred(v))
            .cloned();
        match found {
            Some(v) => v,
            None => self.wait_for(what, pred),
        }
    }

    /// Reads every event until none comes for `quiet` (at most 60 s in
    /// all; panics beyond): for a process that settles after a storm.
    pub fn wait_quiet(&self, quiet: Duration) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while let Ok(v) = self.lines.recv_timeout(quiet) {
            self.history.borrow_mut().push(v);
            assert!(
                std::time::Instant::now() < deadline,
                "still busy after 60 s"
            );
        }
    }

    /// Reads the events already waiting (no wait).
    pub fn drain(&self) {
        while let Ok(v) = self.lines.try_recv() {
            self.history.borrow_mut().push(v);
        }
    }

    /// Every event read so far (by [`Proc::wait_for`]), in order.
    pub fn seen(&self) -> Vec<Value> {
        self.history.borrow().clone()
    }

    /// Writes a command line to its stdin.
    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
        }
    }

    /// Waits for a `call` event in `state` (`confirmed`, `disconnected`,
    /// …), the failure naming `WHO STATE`.
    pub fn wait_call(&self, who: &str, state: &str) -> Value {
        self.wait_for(&format!("{who} {state}"), |v| {
            v["event"] == "call" && v["state"] == state
        })
    }

    /// Waits for its registration (`WHO registered`).
    pub fn wait_registered(&self, who: &str) -> Value {
        self.wait_for(&format!("{who} registered"), |v| {
            v["event"] == "registration" && v["state"] == "registered"
        })
    }

    /// Sends `quit`, waits for the unregistration, and reaps it.
    pub fn quit(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        let _ = self.wait_for("unregistered", |v| {
            v["event"] == "registration" && v["state"] == "unregistered"
        });
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Whether this process may build network namespaces (root and
/// iproute2); says why the test is skipped otherwise, or fails when
/// `SIPROAM_REQUIRE_INTEROP` is set (CI).
pub fn can_build_namespaces() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let have_ip = Command::new("ip").arg("-V").output().is_ok();
    if root && have_ip {
        return true;
    }
    if std::env::var_os("SIPROAM_REQUIRE_INTEROP").is_some() {
        panic!("the namespace tests need root and iproute2, and this run requires them");
    }
    eprintln!("skipped: the namespace tests need root and iproute2 (`ip netns`)");
    false
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("siproam-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// True when `tool` is on PATH; otherwise says why the test is skipped,
/// or fails when `SIPROAM_REQUIRE_INTEROP=1` (CI).
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let why = format!("{tool} is not installed (run interop/install.sh as root)");
        if std::env::var("SIPROAM_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
            panic!("required interop peer missing: {why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    found
}

/// A port free on 127.0.0.1 for UDP and TCP, with the next `extra` ports
/// free too.
pub fn free_port(extra: u16) -> u16 {
    'outer: for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if port > 65000 {
            continue;
        }
        for p in port..=port + extra {
            if UdpSocket::bind(("127.0.0.1", p)).is_err()
                || (p != port && TcpListener::bind(("127.0.0.1", p)).is_err())
            {
                continue 'outer;
            }
        }
        return port;
    }
    panic!("no free port");
}

/// Waits for the `siproam registrar`'s binding of Alice
/// (`sip:alice@example.test`) to be one Contact containing `ip`: the new
/// one replaced the old.
pub fn wait_binding(registrar: &Proc, ip: &str) {
    registrar.wait_for(&format!("alice's one binding on {ip}"), |v| {
        v["event"] == "binding"
            && v["aor"] == "sip:alice@example.test"
            && v["contacts"].as_array().is_some_and(|c| {
                c.len() == 1
                    && c.first()
                        .and_then(|b| b["contact"].as_str())
                        .is_some_and(|b| b.contains(ip))
            })
    });
}

/// A SIPp process, killed when dropped.
pub struct Sipp(pub Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIPp running the UAS `scenario` (under `interop/sipp/`) for one call,
/// SIP on 127.0.0.1:`port`, media on `mport` echoing what arrives
/// (`-rtp_echo`), in `dir` (its logs go there), with `extra` arguments;
/// bounded (60 s overall, `-timeout 40s`). Returns once SIPp listens.
pub fn sipp_uas(scenario: &str, dir: &Path, port: u16, mport: u16, extra: &[&str]) -> Sipp {
    let sipp = Sipp(
        Command::new("timeout")
            .args(["60", "sipp", "-sf"])
            .arg(repo().join("interop/sipp").join(scenario))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mi", "127.0.0.1", "-mp", &mport.to_string()])
            .args(["-rtp_echo", "-m", "1", "-nostdin", "-timeout", "40s"])
            .arg("-timeout_error")
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // SIPp is ready once its UDP port is taken (a sleep raced a loaded
    // machine: the INVITE went out before SIPp listened)
    wait_udp_bound("127.0.0.1", port);
    sipp
}

/// Waits (up to 10 s, polling) until something is bound to UDP `ip:port`.
pub fn wait_udp_bound(ip: &str, port: u16) {
    for _ in 0..1000 {
        if UdpSocket::bind((ip, port)).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing bound UDP {ip}:{port} within 10 s");
}

/// Power of `freq` in 8 kHz `samples` (the Goertzel algorithm).
pub fn goertzel(samples: &[i16], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// The WAV file holds a clear tone at `freq` (100× the power of nearby
/// frequencies, in its middle 4000 samples).
pub fn assert_tone(wav: &Path, freq: f64) {
    let samples: Vec<i16> = hound::WavReader::open(wav)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect();
    assert!(
        samples.len() > 6000,
        "{}: only {} samples",
        wav.display(),
        samples.len()
    );
    let mid = samples.len() / 2;
    let window = &samples[mid - 2000..mid + 2000];
    let at = goertzel(window, freq);
    for other in [freq * 0.5, freq * 1.5, 1234.0] {
        let p = goertzel(window, other);
        assert!(
            at > 100.0 * p,
            "{}: {freq} Hz {at:e} vs {other} Hz {p:e}",
            wav.display()
        );
    }
}

/// A CA and a server certificate for 127.0.0.1, as PEM files.
pub fn certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "siproam test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

/// A Kamailio of `interop/kamailio` (registrar and proxy), stopped on drop.
pub struct Kamailio {
    workdir: PathBuf,
}

impl Kamailio {
    /// Kamailio on 127.0.0.1:`port`.
    pub fn start(port: u16) -> Kamailio {
        Kamailio::start_in(None, port, "", &format!("{}-{port}", std::process::id()))
    }

    /// True when `kamailio` and `kamcmd` are installed; otherwise says
    /// why the test is skipped, or fails when `SIPROAM_REQUIRE_INTEROP=1`
    /// (CI).
    pub fn available() -> bool {
        have("kamailio") && have("kamcmd")
    }

    /// Kamailio on a free port of 127.0.0.1 with extra `KAM_ARGS` (e.g.
    /// `-A WITH_QOP`); its working directory is named by `name`, the
    /// process and the port. Returns it and its port.
    pub fn start_local(kam_args: &str, name: &str) -> (Kamailio, u16) {
        let port = free_port(0);
        let tag = format!("{name}-{}-{port}", std::process::id());
        (Kamailio::start_in(None, port, kam_args, &tag), port)
    }

    /// Kamailio on `port` inside network namespace `netns` (when given),
    /// with extra `KAM_ARGS` (e.g. `-A SIP_ADDR=10.9.0.2`); `tag` names its
    /// working directory.
    pub fn start_in(netns: Option<&str>, port: u16, kam_args: &str, tag: &str) -> Kamailio {
        Kamailio::start_cfg(netns, port, kam_args, tag, "kamailio.cfg")
    }

    /// [`Kamailio::start_in`] with another config of `interop/kamailio`
    /// (`KAM_CFG`), e.g. `edge.cfg`.
    pub fn start_cfg(
        netns: Option<&str>,
        port: u16,
        kam_args: &str,
        tag: &str,
        cfg: &str,
    ) -> Kamailio {
        let workdir = std::env::temp_dir().join(format!("siproam-kam-{tag}"));
        std::fs::create_dir_all(&workdir).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "bash"]);
                c
            }
            None => Command::new("bash"),
        };
        let out = cmd
            .arg(repo().join("interop/kamailio/run.sh"))
            .arg(port.to_string())
            .arg(&workdir)
            .env("KAM_ARGS", kam_args)
            .env("KAM_CFG", repo().join("interop/kamailio").join(cfg))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kamailio did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Kamailio { workdir }
    }

    /// What Kamailio logged so far (`WORKDIR/kamailio.log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.workdir.join("kamailio.log")).unwrap_or_default()
    }

    /// The contacts bound to `aor`, sorted.
    pub fn bindings(&self, aor: &str) -> Vec<String> {
        self.bindings_with(aor, "Address")
    }

    /// `fields` (`ul.lookup` names, e.g. `Address,Socket`) of each binding
    /// of `aor`, tab-separated, sorted.
    pub fn bindings_with(&self, aor: &str, fields: &str) -> Vec<String> {
        let out = Command::new("bash")
            .arg(repo().join("interop/kamailio/bindings.sh"))
            .arg(&self.workdir)
            .arg(aor)
            .arg(fields)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bindings.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }
}

/// The address `p` listens on for `transport` (`tcp`, `udp`, …): its
/// `listening` event, seen already or waited for.
pub fn listening(p: &Proc, transport: &str) -> String {
    p.seen_or_wait(&format!("{transport} listener"), |v| {
        v["event"] == "listening" && v["transport"] == transport
    })["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Reads one SIP message's head (up to the blank line, or as far as it
/// came before the stream failed or closed) from a stream.
pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match std::io::Read::read(s, &mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// `siproam registrar --json` for `example.test` on a TCP port of
/// 127.0.0.1, with `extra` options; and its URI
/// (`sip:ADDRESS;transport=tcp`).
pub fn tcp_registrar(extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "registrar",
        "--json",
        "--listen",
        "tcp:127.0.0.1:0",
        "--domain",
        "example.test",
    ];
    args.extend_from_slice(extra);
    let registrar = Proc::spawn(&args);
    let uri = format!("sip:{};transport=tcp", listening(&registrar, "tcp"));
    (registrar, uri)
}

/// `siproam edge --json` in front of `registrar_uri`, listening on a TCP
/// port of 127.0.0.1, with `extra` options (more `--listen`s, Flow-Timer,
/// …).
pub fn edge_before(registrar_uri: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "edge",
        "--json",
        "--listen",
        "tcp:127.0.0.1:0",
        "--registrar",
        registrar_uri,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args)
}

/// `siproam agent --json` for `aor` with outbound (RFC 5626) and no
/// listener of its own: it registers at `registrar_uri` through the edge
/// at TCP `edge_tcp` (its outbound proxy) as instance `urn`; `extra`
/// options. Not waited for.
pub fn outbound_agent(
    aor: &str,
    registrar_uri: &str,
    edge_tcp: &str,
    urn: &str,
    extra: &[&str],
) -> Proc {
    let proxy = format!("sip:{edge_tcp};transport=tcp");
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        aor,
        "--registrar",
        registrar_uri,
        "--outbound",
        "--outbound-proxy",
        &proxy,
        "--instance-id",
        urn,
        "--no-listen",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args)
}

/// `siproam agent --json` for `sip:USER@example.test` registering at
/// `registrar`, listening on `listen`, with `extra` options; not waited
/// for.
pub fn agent_at(registrar: &str, user: &str, listen: &str, extra: &[&str]) -> Proc {
    let aor = format!("sip:{user}@example.test");
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        &aor,
        "--registrar",
        registrar,
        "--listen",
        listen,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args)
}

/// Kamailio's `callauth:` lines (`407 METHOD CSEQ from USER`,
/// `ok METHOD CSEQ from USER`, logged by `kamailio.cfg` for each request
/// it challenges or lets through) once `pred` holds for them (60 s at
/// most; `what` names them in the failure).
pub fn auth_lines(kam: &Kamailio, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lines: Vec<String> = kam
            .log()
            .lines()
            .filter_map(|l| l.split("callauth: ").nth(1))
            .map(|l| l.trim().to_owned())
            .collect();
        if pred(&lines) {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Kamailio never logged {what}: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`agent_at`] with `--password PASSWORD`.
pub fn account_agent(
    registrar: &str,
    user: &str,
    password: &str,
    listen: &str,
    extra: &[&str],
) -> Proc {
    let mut args = vec!["--password", password];
    args.extend_from_slice(extra);
    agent_at(registrar, user, listen, &args)
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("interop/kamailio/stop.sh"))
            .arg(&self.workdir)
            .status();
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// Sends `signal` (`STOP`, `CONT`, …) to a process (`ip netns exec`
/// execs `siproam`: the child's pid is siproam's).
pub fn signal(p: &Proc, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &p.child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal}");
}

/// A `redis-server` of the test's own on 127.0.0.1 (no persistence),
/// killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// True when `redis-server` and `redis-cli` are installed; otherwise
    /// says why the test is skipped, or fails when
    /// `SIPROAM_REQUIRE_INTEROP=1` (CI).
    pub fn available() -> bool {
        have("redis-server") && have("redis-cli")
    }

    /// Starts one (no RDB snapshots, no AOF) and waits until it answers.
    pub fn start() -> Redis {
        let port = free_port(0);
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let redis = Redis { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while redis.cli(&["PING"]) != "PONG" {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli -p PORT ARGS`, its output trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The elements of an SVG whose `class` is `class`: each one's
/// attributes and its text (the texts inside it, joined by `|`).
pub fn svg_groups(
    svg: &str,
    class: &str,
) -> Vec<(std::collections::HashMap<String, String>, String)> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.attribute("class") == Some(class))
        .map(|n| {
            let attrs = n
                .attributes()
                .map(|a| (a.name().to_owned(), a.value().to_owned()))
                .collect();
            let text: Vec<&str> = n
                .descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect();
            (attrs, text.join("|"))
        })
        .collect()
}
