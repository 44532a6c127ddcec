//! `siproam bench attack`: a server under hostile traffic, on loopback.
//!
//! The target (`siproam registrar` with digest users, or `siproam agent`)
//! runs as a child process so its own memory and descriptors are measured.
//! A legitimate client (another source address) keeps asking while one
//! attacker source floods unauthenticated requests as fast as it can for
//! `--secs`; the client goes on for `--after` seconds once the flood stops.
//! Then `--tcp-idle N` idle TCP connections are opened from many source
//! addresses and a new TCP client must still register. Figures only: the
//! tests assert outcomes from the JSON, never times.
//!
//! `--target edge` runs `siproam edge` in front of a registrar (both
//! children; the edge's memory and descriptors are the ones measured):
//! the clients register through the edge with outbound, the flood goes
//! at the edge, and each probe also reaches Alice with an OPTIONS sent to
//! the registrar, which goes along her Path through the edge over her
//! flow — so a lost binding or flow shows.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use siproam::core::{Event, RegistrationState};
use siproam::transport::Transport;
use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, UserAgent};

use crate::run::emit;

/// What `bench attack` is told to do.
#[derive(Debug, Clone)]
pub struct AttackArgs {
    /// `registrar` or `agent`.
    pub target: String,
    /// Flood duration.
    pub secs: u64,
    /// Flood rate cap (requests per second); 0 = as fast as one thread can.
    pub rate: u64,
    /// How long the legitimate client goes on after the flood.
    pub after: u64,
    /// Idle TCP connections to open (registrar only; 0 = skip).
    pub tcp_idle: usize,
}

/// A child server and the addresses it listens on.
struct Target {
    child: Child,
    udp: SocketAddr,
    tcp: Option<SocketAddr>,
    /// Keeps the agent's stdin open (it quits at end of input).
    _stdin: Option<std::process::ChildStdin>,
    /// The registrar behind an edge target.
    upstream: Option<Box<Target>>,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in bytes (0 when unreadable).
fn rss_of(pid: u32) -> u64 {
    crate::bench::rss_of(pid).unwrap_or(0)
}

/// Open descriptors of a process.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A child's stdout until it named the listeners wanted (`listening`
/// events); its later output drained so it never blocks on a full pipe.
fn spawn_listening(
    mut cmd: Command,
    what: &str,
    want_udp: bool,
    want_tcp: bool,
) -> anyhow::Result<Target> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("target stdout")?;
    let mut reader = BufReader::new(stdout);
    let (mut udp, mut tcp) = (None, None);
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (want_udp && udp.is_none()) || (want_tcp && tcp.is_none()) {
        line.clear();
        if reader.read_line(&mut line)? == 0 || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {what} exited before listening");
        }
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v.get("event").and_then(Value::as_str) != Some("listening") {
            continue;
        }
        let addr: Option<SocketAddr> = v
            .get("address")
            .and_then(Value::as_str)
            .and_then(|a| a.parse().ok());
        match v.get("transport").and_then(Value::as_str) {
            Some("udp") => udp = addr,
            Some("tcp") => tcp = addr,
            _ => {}
        }
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    Ok(Target {
        child,
        udp: udp.context("no UDP listener")?,
        tcp,
        _stdin: stdin,
        upstream: None,
    })
}

fn start_target(args: &AttackArgs, dir: &std::path::Path) -> anyhow::Result<Target> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--json");
    if args.target == "agent" {
        cmd.args([
            "agent",
            "--aor",
            "sip:agent@example.test",
            "--no-watch",
            "--listen",
            "udp:127.0.0.1:0",
        ]);
        return spawn_listening(cmd, "agent", true, false);
    }
    let users = dir.join("users.txt");
    std::fs::write(&users, "alice:alicepw\nbob:bobpw\n")?;
    cmd.args([
        "registrar",
        "--domain",
        "example.test",
        "--listen",
        "udp:127.0.0.1:0",
        "--listen",
        "tcp:127.0.0.1:0",
        "--users",
    ])
    .arg(&users);
    if args.target == "edge" {
        // reached only through the edge, which limits each client: the
        // edge is one source for all of them
        cmd.args(["--max-rate-per-source", "0"]);
    }
    let registrar = spawn_listening(cmd, "registrar", true, true)?;
    if args.target != "edge" {
        return Ok(registrar);
    }
    // the edge in front of it, over TCP
    let reg_tcp = registrar.tcp.context("no registrar TCP listener")?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--json",
        "edge",
        "--listen",
        "udp:127.0.0.1:0",
        "--listen",
        "tcp:127.0.0.1:0",
        "--registrar",
    ])
    .arg(format!("sip:{reg_tcp};transport=tcp"));
    let mut edge = spawn_listening(cmd, "edge", true, true)?;
    edge.upstream = Some(Box::new(registrar));
    Ok(edge)
}

/// One unauthenticated request from the attacker, numbered `n` (fresh
/// branch and Call-ID: a new transaction every time).
fn flood_request(method: &str, from: SocketAddr, to: SocketAddr, n: u64) -> String {
    format!(
        "{method} sip:example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKatk{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:mallory@example.test>;tag=a{n}\r\n\
         To: <sip:alice@example.test>\r\n\
         Call-ID: atk{n}@{to}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:mallory@{from}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Floods `to` from one source for `secs` (at most `rate` a second when
/// not 0); returns how many were sent.
fn flood(
    method: &'static str,
    to: SocketAddr,
    secs: u64,
    rate: u64,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(sock) = UdpSocket::bind("127.0.0.5:0") else {
            return;
        };
        let Ok(from) = sock.local_addr() else {
            return;
        };
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut n = 0u64;
        while Instant::now() < end {
            for _ in 0..64 {
                let msg = flood_request(method, from, to, n);
                // a full receive queue drops on loopback: never blocks
                let _ = sock.send_to(msg.as_bytes(), to);
                n += 1;
            }
            sent.store(n, Ordering::Relaxed);
            if rate > 0 {
                let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
        sent.store(n, Ordering::Relaxed);
    })
}

/// Latency samples of one phase.
#[derive(Debug, Default)]
struct Phase {
    ms: Vec<f64>,
    failed: usize,
}

impl Phase {
    fn summary(&mut self) -> Value {
        self.ms.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Value {
            if self.ms.is_empty() {
                return Value::Null;
            }
            let i = ((self.ms.len() as f64 - 1.0) * p).round() as usize;
            let v = self.ms.get(i).copied().unwrap_or(0.0);
            json!((v * 1000.0).round() / 1000.0)
        };
        json!({
            "served": self.ms.len(),
            "failed": self.failed,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
        })
    }
}

/// The legitimate client's view of the run.
#[derive(Debug, Default)]
struct Probes {
    before: Phase,
    during: Phase,
    after: Phase,
    /// Completion times of the successful probes (for gaps).
    served_at: Vec<Instant>,
}

impl Probes {
    fn record(&mut self, phase: u8, sent: Instant, ok: bool) {
        let p = match phase {
            0 => &mut self.before,
            1 => &mut self.during,
            _ => &mut self.after,
        };
        if ok {
            p.ms.push(sent.elapsed().as_secs_f64() * 1000.0);
            self.served_at.push(Instant::now());
        } else {
            p.failed += 1;
        }
    }

    /// The longest time without a served probe, from the flood's start to
    /// the end of the run.
    fn longest_gap_ms(&self, from: Instant) -> f64 {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in self.served_at.iter().filter(|t| **t >= from) {
            gap = gap.max(t.saturating_duration_since(last));
            last = *t;
        }
        (gap.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
    }
}

/// A raw OPTIONS probe (the agent target): sends, retransmits after
/// 500 ms like a UAC would, and waits up to 4 s for the 200.
fn options_probe(sock: &UdpSocket, to: SocketAddr, ruri: &str, n: u64) -> bool {
    let Ok(from) = sock.local_addr() else {
        return false;
    };
    let msg = format!(
        "OPTIONS {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKprobe{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@example.test>;tag=p{n}\r\n\
         To: <sip:agent@example.test>\r\n\
         Call-ID: probe{n}@{from}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let start = Instant::now();
    let mut next_send = start;
    let mut buf = [0u8; 4096];
    let want = format!("probe{n}@");
    while start.elapsed() < Duration::from_secs(4) {
        if Instant::now() >= next_send {
            let _ = sock.send_to(msg.as_bytes(), to);
            next_send += Duration::from_millis(500);
        }
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(buf.get(..len).unwrap_or_default());
            if text.starts_with("SIP/2.0 200") && text.contains(&want) {
                return true;
            }
        }
    }
    false
}

/// An OPTIONS for Alice's AoR sent to the registrar: it answers only when
/// her binding is there and the edge still holds her flow.
async fn reach_alice(sock: &UdpSocket, registrar: SocketAddr, n: u64) -> anyhow::Result<bool> {
    let sock = sock.try_clone()?;
    // numbered apart from the plain probes
    let k = n + (1 << 40);
    Ok(tokio::task::spawn_blocking(move || {
        options_probe(&sock, registrar, "sip:alice@example.test", k)
    })
    .await?)
}

fn phase_of(now: Instant, flood_start: Instant, flood_end: Instant) -> u8 {
    if now < flood_start {
        0
    } else if now < flood_end {
        1
    } else {
        2
    }
}

/// Raises this process's descriptor limit as far as it may go (root may
/// raise the hard limit too): the TCP part holds thousands of sockets.
fn raise_fd_limit(want: u64) -> u64 {
    siproam::raise_open_files_limit_to(want).unwrap_or(0)
}

/// `siproam bench attack`.
pub async fn attack(args: AttackArgs, json_out: bool) -> anyhow::Result<ExitCode> {
    if !["registrar", "agent", "edge"].contains(&args.target.as_str()) {
        bail!("--target {}: registrar, agent or edge", args.target);
    }
    let dir = std::env::temp_dir().join(format!("siproam-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let target = start_target(&args, &dir)?;
    let pid = target.child.id();
    let agent = args.target == "agent";
    // behind an edge: the registrar the edge forwards to, and the first
    // hop (the edge) each client goes through
    let upstream = target.upstream.as_ref().map(|u| (u.udp, u.tcp));
    let (registrar_udp, via_udp) = match upstream {
        Some((reg_udp, _)) => (reg_udp, Some(format!("sip:{}", target.udp))),
        None => (target.udp, None),
    };

    // the legitimate client
    let mut client = None;
    let mut account = None;
    if !agent {
        let mut ep = EndpointHandle::start(
            EndpointConfig {
                listen: vec![(Transport::Udp, "127.0.0.2:0".parse()?)],
                ..Default::default()
            },
            Box::new(UserAgent),
        )
        .await?;
        let acc = ep
            .register(spec(
                "alice",
                "alicepw",
                &format!("sip:{registrar_udp}"),
                via_udp.clone(),
            ))
            .await?;
        wait_registered(&mut ep, Duration::from_secs(10))
            .await
            .context("the legitimate client could not register before the flood")?;
        client = Some(ep);
        account = Some(acc);
    }
    let probe_sock = UdpSocket::bind("127.0.0.2:0")?;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_baseline = rss_of(pid);
    let fds_baseline = fds_of(pid);
    let mut probes = Probes::default();
    let sent = Arc::new(AtomicU64::new(0));
    let mut rss_peak = rss_baseline;
    let mut n = 0u64;

    // 2 s of probes before, the flood, `after` s of probes after
    let run_start = Instant::now();
    let flood_start = run_start + Duration::from_secs(2);
    let flood_end = flood_start + Duration::from_secs(args.secs);
    let run_end = flood_end + Duration::from_secs(args.after);
    let mut flooder = None;
    let mut rss_at_flood_end = None;
    while Instant::now() < run_end {
        let now = Instant::now();
        if flooder.is_none() && now >= flood_start {
            let method = if agent { "OPTIONS" } else { "REGISTER" };
            flooder = Some(flood(
                method,
                target.udp,
                args.secs,
                args.rate,
                sent.clone(),
            ));
        }
        if rss_at_flood_end.is_none() && now >= flood_end {
            rss_at_flood_end = Some(rss_of(pid));
        }
        let phase = phase_of(now, flood_start, flood_end);
        let ok = match (&mut client, account) {
            (Some(ep), Some(acc)) => {
                let registered = ep.reregister(acc).await.is_ok()
                    && wait_registered(ep, Duration::from_secs(4)).await.is_ok();
                // behind an edge: Alice is reached too, registrar -> Path ->
                // the edge -> her flow
                registered
                    && (upstream.is_none() || reach_alice(&probe_sock, registrar_udp, n).await?)
            }
            _ => {
                let sock = probe_sock.try_clone()?;
                let to = target.udp;
                let k = n;
                let ruri = format!("sip:{to}");
                tokio::task::spawn_blocking(move || options_probe(&sock, to, &ruri, k)).await?
            }
        };
        probes.record(phase, now, ok);
        n += 1;
        rss_peak = rss_peak.max(rss_of(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(f) = flooder {
        let _ = tokio::task::spawn_blocking(move || f.join()).await;
    }
    let rss_after = rss_of(pid);
    let fds_after = fds_of(pid);
    let flood_sent = sent.load(Ordering::Relaxed);

    // idle TCP connections from many sources, then a new TCP client
    let mut tcp = Value::Null;
    if let (Some(tcp_addr), true) = (target.tcp, args.tcp_idle > 0) {
        let registrar_tcp = upstream.and_then(|(_, t)| t).unwrap_or(tcp_addr);
        let via = upstream.map(|_| format!("sip:{tcp_addr};transport=tcp"));
        tcp = idle_tcp(tcp_addr, registrar_tcp, via, args.tcp_idle, pid).await?;
    }
    // what was registered before is still there: Alice is reached through
    // the edge once everything is over
    let alice_reachable_at_end = match upstream {
        Some(_) => json!(reach_alice(&probe_sock, registrar_udp, n + 1).await?),
        None => Value::Null,
    };
    let upstream_rss = target.upstream.as_ref().map(|u| rss_of(u.child.id()));

    let longest_gap = probes.longest_gap_ms(flood_start);
    let report = json!({
        "event": "bench",
        "bench": "attack",
        "target": args.target,
        "flood": {
            "method": if agent { "OPTIONS" } else { "REGISTER" },
            "seconds": args.secs,
            "sent": flood_sent,
            "per_second": (flood_sent as f64 / args.secs.max(1) as f64).round(),
        },
        "legit": {
            "before": probes.before.summary(),
            "during": probes.during.summary(),
            "after": probes.after.summary(),
            "longest_gap_ms": longest_gap,
        },
        "memory": {
            "rss_baseline_bytes": rss_baseline,
            "rss_peak_bytes": rss_peak,
            "rss_flood_end_bytes": rss_at_flood_end.unwrap_or(rss_after),
            "rss_after_bytes": rss_after,
            "after_seconds": args.after,
        },
        "fds": { "baseline": fds_baseline, "after": fds_after },
        "tcp": tcp,
        "alice_reachable_at_end": alice_reachable_at_end,
        "registrar_rss_bytes": upstream_rss,
    });
    emit(json_out, report.clone());
    if let Some(ep) = client {
        ep.shutdown().await;
    }
    drop(target);
    let _ = std::fs::remove_dir_all(dir);
    let failed = probes.before.failed + probes.during.failed + probes.after.failed;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// An account at `registrar`; through `via` (an edge) it registers with
/// outbound, so its binding names its flow at the edge.
fn spec(user: &str, password: &str, registrar: &str, via: Option<String>) -> AccountSpec {
    AccountSpec {
        aor: format!("sip:{user}@example.test"),
        registrar: registrar.to_owned(),
        username: None,
        password: Some(password.to_owned()),
        instance_id: via
            .as_ref()
            .map(|_| format!("urn:uuid:00000000-0000-1000-8000-{:012x}", user.len())),
        outbound: via.is_some(),
        reg_id: None,
        expires: 3600,
        ipv6_sip: siproam::Ipv6Use::Enabled,
        ipv6_media: siproam::Ipv6Use::Enabled,
        ip_change: None,
        flow: siproam::FlowSpec {
            outbound_proxy: via,
            ..Default::default()
        },
    }
}

async fn wait_registered(ep: &mut EndpointHandle, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ep.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Registration(r)))) => match r.state {
                RegistrationState::Registered => return Ok(()),
                RegistrationState::Failed => bail!("registration failed: {:?}", r.failure),
                _ => {}
            },
            Ok(Some(_)) => {}
            Ok(None) => bail!("the client stopped"),
            Err(_) => bail!("no answer in {limit:?}"),
        }
    }
}

/// How many idle connections one holder process keeps (each process
/// has its own descriptor limit, which this sandbox cannot raise).
const PER_HOLDER: usize = 10_000;

/// `siproam bench hold-idle` (hidden, run by `bench attack`): opens
/// `count` idle TCP connections to `to`, the i-th from source address
/// 127.0.(1 + (first + i) / 80 / 250).(1 + (first + i) / 80 % 250); prints
/// `{"connected":…,"refused":…}`; on a line on stdin prints how many are
/// still open; exits at the end of stdin.
pub fn hold_idle(to: SocketAddr, count: usize, first: usize) -> anyhow::Result<ExitCode> {
    let _ = raise_fd_limit(count as u64 + 256);
    let mut held = Vec::with_capacity(count);
    let mut refused = 0usize;
    for i in first..first + count {
        let src = Ipv4Addr::new(127, 0, 1 + (i / 80 / 250) as u8, 1 + ((i / 80) % 250) as u8);
        let sock = match socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        ) {
            Ok(s) => s,
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        if sock.bind(&SocketAddr::new(src.into(), 0).into()).is_err()
            || sock
                .connect_timeout(&to.into(), Duration::from_millis(500))
                .is_err()
        {
            refused += 1;
            continue;
        }
        held.push(TcpStream::from(sock));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({"connected": held.len(), "refused": refused})
    )?;
    out.flush()?;
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.read_line(&mut line)? > 0 {
        line.clear();
        let mut open = 0usize;
        for s in &held {
            let _ = s.set_nonblocking(true);
            let mut b = [0u8; 1];
            if let Err(e) = std::io::Read::read(&mut &*s, &mut b) {
                open += usize::from(e.kind() == std::io::ErrorKind::WouldBlock);
            }
        }
        writeln!(out, "{}", json!({"still_open": open}))?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A holder process and its output.
struct Holder {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Holder {
    fn next(&mut self) -> Value {
        self.lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| serde_json::from_str(&l).ok())
            .unwrap_or(Value::Null)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Holds `n` idle TCP connections to `to` from 127.0.1.1… (80 per source
/// address) in holder processes, then registers a new client over TCP
/// from 127.0.0.3; reports how many the attacker got and kept, and whether
/// the new client was served.
async fn idle_tcp(
    to: SocketAddr,
    registrar: SocketAddr,
    via: Option<String>,
    n: usize,
    pid: u32,
) -> anyhow::Result<Value> {
    let fds_before = fds_of(pid);
    let exe = std::env::current_exe()?;
    let mut holders = Vec::new();
    let mut first = 0;
    while first < n {
        let count = PER_HOLDER.min(n - first);
        let mut child = Command::new(&exe)
            .args(["bench", "hold-idle", "--to"])
            .arg(to.to_string())
            .args(["--count", &count.to_string(), "--first", &first.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("holder stdout")?;
        holders.push(Holder {
            child,
            lines: BufReader::new(stdout).lines(),
        });
        first += count;
    }
    let (mut connected, mut refused) = (0u64, 0u64);
    for h in &mut holders {
        let v = tokio::task::block_in_place(|| h.next());
        connected += v.get("connected").and_then(Value::as_u64).unwrap_or(0);
        refused += v.get("refused").and_then(Value::as_u64).unwrap_or(0);
    }
    // give the server a moment to settle what it accepted
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_fds = fds_of(pid);
    let server_rss = rss_of(pid);
    // a new TCP client registers while they are held
    let start = Instant::now();
    let mut ep = EndpointHandle::start(
        EndpointConfig {
            listen: vec![(Transport::Tcp, "127.0.0.3:0".parse()?)],
            ..Default::default()
        },
        Box::new(UserAgent),
    )
    .await?;
    ep.register(spec(
        "bob",
        "bobpw",
        &format!("sip:{registrar};transport=tcp"),
        via,
    ))
    .await?;
    let served = wait_registered(&mut ep, Duration::from_secs(10)).await;
    let latency_ms = (start.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    ep.shutdown().await;
    // how many of the attacker's connections the server still holds
    let mut still_open = 0u64;
    for h in &mut holders {
        if let Some(stdin) = h.child.stdin.as_mut() {
            let _ = writeln!(stdin, "check");
            let _ = stdin.flush();
        }
        let v = tokio::task::block_in_place(|| h.next());
        still_open += v.get("still_open").and_then(Value::as_u64).unwrap_or(0);
    }
    drop(holders);
    // the attacker's connections gone: what the server keeps
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fds_released = fds_of(pid);
    let rss_released = rss_of(pid);
    Ok(json!({
        "attempted": n,
        "connected": connected,
        "refused": refused,
        "still_open": still_open,
        "server_fds_before": fds_before,
        "server_fds_held": server_fds,
        "server_rss_held_bytes": server_rss,
        "server_fds_released": fds_released,
        "server_rss_released_bytes": rss_released,
        "new_client_registered": served.is_ok(),
        "new_client_error": served.err().map(|e| e.to_string()),
        "new_client_ms": latency_ms,
    }))
}
