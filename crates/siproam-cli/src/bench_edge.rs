//! `siproam bench edge`: `siproam registrar` against Kamailio 5.6 set up
//! the same way (`interop/kamailio/bench.cfg`: location in memory,
//! REGISTER only, the same users file), in one run on one machine, driven
//! by the same load generator of this process:
//!
//! - UDP REGISTER/s without and with digest (each registration with digest
//!   is REGISTER, 401, REGISTER with credentials, 200), from many source
//!   addresses (a real population, not one flooding source), a window of
//!   requests in flight;
//! - memory per binding: the server's proportional set size (PSS, summed
//!   over its processes) before and after `bindings` AoRs registered once;
//! - TCP flows held with keep-alives: `flows` connections from their own
//!   addresses, each registered, then a CRLFCRLF ping on each every
//!   `interval` seconds; memory per flow (PSS) and the pong latency as the
//!   generator sees it (p50, p99).
//!
//! The generator runs on its own thread with its own single-threaded
//! runtime, so it takes at most one core; its CPU is reported, so a run
//! where it, not the server, was the limit shows as such.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use siproam_sip::digest::{self, Challenge, ClientInput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::run::emit;

/// How long a REGISTER waits for its answer before it goes again.
const RETRANSMIT: Duration = Duration::from_millis(500);

/// The domain every bench AoR is in.
const DOMAIN: &str = "example.test";

/// What to run.
#[derive(Debug, Clone)]
pub struct EdgeBench {
    /// AoRs registered (the memory figure is taken at this many).
    pub bindings: usize,
    /// Seconds of each REGISTER/s run and of the keep-alive run.
    pub seconds: u64,
    /// TCP flows held (0: skip that part).
    pub flows: usize,
    /// Seconds between pings on each flow.
    pub interval: u64,
    /// Source addresses the UDP load comes from.
    pub sources: usize,
    /// REGISTERs in flight at once, over all sources.
    pub window: usize,
    /// Whether to run Kamailio too (it must be installed).
    pub kamailio: bool,
    /// Also siproam registrar behind `siproam edge`.
    pub edge: bool,
    /// Also siproam registrar with `--store redis://` (redis-server must
    /// be installed).
    pub redis: bool,
}

/// A server under test, stopped on drop.
enum Server {
    Siproam(Child),
    /// An edge and the registrar behind it, measured together.
    Pair(Box<Server>, Box<Server>),
    Kamailio {
        workdir: PathBuf,
        pid: u32,
    },
}

impl Server {
    fn name(&self) -> &'static str {
        match self {
            Server::Siproam(_) | Server::Pair(..) => "siproam",
            Server::Kamailio { .. } => "kamailio",
        }
    }

    /// The processes that make it up (Kamailio forks workers into its
    /// process group).
    fn pids(&self) -> Vec<u32> {
        match self {
            Server::Siproam(child) => vec![child.id()],
            Server::Pair(a, b) => a.pids().into_iter().chain(b.pids()).collect(),
            Server::Kamailio { pid, .. } => process_group(*pid),
        }
    }

    /// Proportional set size of all its processes, bytes.
    fn pss(&self) -> u64 {
        self.pids().into_iter().filter_map(pss_of).sum()
    }

    /// CPU time of all its processes, seconds.
    fn cpu(&self) -> f64 {
        self.pids()
            .into_iter()
            .filter_map(|p| crate::bench::cpu_seconds_of(&p.to_string()))
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match self {
            Server::Siproam(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Server::Pair(..) => {}
            Server::Kamailio { workdir, .. } => {
                let _ = Command::new(interop_dir().join("kamailio/stop.sh"))
                    .arg(&*workdir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(&*workdir);
            }
        }
    }
}

/// The members of process group `pgid` (Kamailio: run.sh starts it with
/// setsid), zombies left out.
fn process_group(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // after the command name: state ppid pgrp …
            let mut rest = stat.rsplit_once(')').map_or("", |r| r.1).split_whitespace();
            let state = rest.next();
            let _ppid = rest.next();
            state != Some("Z") && rest.next().and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
        })
        .collect()
}

/// `Pss:` of `/proc/PID/smaps_rollup`, bytes.
fn pss_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `interop/` of the source tree this binary was built from.
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

/// Starts `siproam registrar` (this binary) on UDP and TCP of 127.0.0.1,
/// with `users` if given; returns it and its UDP and TCP addresses.
fn start_siproam(
    users: Option<&Path>,
    max_connections: usize,
) -> anyhow::Result<(Server, SocketAddr, SocketAddr)> {
    let mut args: Vec<String> = vec!["--domain".into(), DOMAIN.into()];
    if let Some(u) = users {
        args.push("--users".into());
        args.push(u.to_string_lossy().into_owned());
    }
    start_child("registrar", &args, max_connections)
}

/// Starts `siproam COMMAND --json --listen udp:… --listen tcp:…` with
/// `args` and waits for both listeners.
fn start_child(
    command: &str,
    args: &[String],
    max_connections: usize,
) -> anyhow::Result<(Server, SocketAddr, SocketAddr)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([command, "--json"])
        .args(["--listen", "udp:127.0.0.1:0", "--listen", "tcp:127.0.0.1:0"])
        .args(["--max-connections", &max_connections.to_string()])
        .args(args);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("registrar stdout")?;
    let server = Server::Siproam(child);
    let mut reader = BufReader::new(stdout);
    let (mut udp, mut tcp) = (None, None);
    let mut line = String::new();
    while udp.is_none() || tcp.is_none() {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("siproam {command} exited before listening");
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
    let (Some(udp), Some(tcp)) = (udp, tcp) else {
        bail!("siproam {command} did not say where it listens");
    };
    Ok((server, udp, tcp))
}

/// A `redis-server` of the bench's own on 127.0.0.1 (no persistence),
/// stopped on drop.
struct Redis(Child, u16);

impl Redis {
    fn start() -> anyhow::Result<Redis> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian package redis-server)")?;
        let redis = Redis(child, port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP (a moment ago).
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..64 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

/// Starts Kamailio with `interop/kamailio/bench.cfg` through run.sh.
fn start_kamailio(users: &Path, auth: bool) -> anyhow::Result<(Server, SocketAddr, SocketAddr)> {
    let port = free_port()?;
    let workdir =
        std::env::temp_dir().join(format!("siproam-bench-kam-{}-{port}", std::process::id()));
    // two UDP workers: the cores of this machine, as siproam's two threads;
    // shared memory for 50,000 bindings and 20,000 connections
    let mut args = String::from("-n 2 -m 1024 -M 16");
    if auth {
        args.push_str(" -A WITH_AUTH");
    }
    let out = Command::new(interop_dir().join("kamailio/run.sh"))
        .arg(port.to_string())
        .arg(&workdir)
        .env("KAM_CFG", interop_dir().join("kamailio/bench.cfg"))
        .env("KAM_USERS", users)
        .env("KAM_DOMAIN", DOMAIN)
        .env("KAM_ARGS", args)
        .env("KAM_START_TIMEOUT", "30")
        .stdin(Stdio::null())
        .output()
        .context("interop/kamailio/run.sh")?;
    if !out.status.success() {
        bail!(
            "Kamailio did not start: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("Kamailio's pid from run.sh")?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    Ok((Server::Kamailio { workdir, pid }, addr, addr))
}

/// The users file: `u0:pw0` … for `n` users.
fn users_file(n: usize) -> anyhow::Result<PathBuf> {
    use std::fmt::Write;
    let path = std::env::temp_dir().join(format!("siproam-bench-users-{}", std::process::id()));
    let mut text = String::with_capacity(n * 16);
    for i in 0..n {
        let _ = writeln!(text, "u{i}:pw{i}");
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The `i`-th generator source address (127.3.0.1, 127.3.0.2, …; flows
/// use 127.4.x.y).
fn source(net: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, net, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// One REGISTER for user `user`, from `local` over `transport`.
fn register(
    user: usize,
    cseq: u32,
    local: SocketAddr,
    transport: &str,
    auth: Option<&str>,
) -> Vec<u8> {
    let tp = transport.to_ascii_uppercase();
    let param = if transport == "udp" {
        String::new()
    } else {
        format!(";transport={transport}")
    };
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/{tp} {local};branch=z9hG4bK{user}x{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{user}@{DOMAIN}>;tag=t{user}\r\n\
         To: <sip:u{user}@{DOMAIN}>\r\n\
         Call-ID: c{user}@bench\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:u{user}@{local}{param}>\r\n\
         Expires: 3600\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The status code of a response.
fn status(msg: &[u8]) -> Option<u16> {
    if !msg.starts_with(b"SIP/2.0 ") {
        return None;
    }
    std::str::from_utf8(msg.get(8..11)?).ok()?.parse().ok()
}

/// The value of header `name` (full form, as both servers print it).
fn header<'a>(msg: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(msg).ok()?;
    text.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The user a response is for (from `Call-ID: cN@bench`).
fn user_of(msg: &[u8]) -> Option<usize> {
    header(msg, "Call-ID")?
        .strip_prefix('c')?
        .split('@')
        .next()?
        .parse()
        .ok()
}

/// The Authorization answering a 401 for `user`.
fn answer_challenge(msg: &[u8], user: usize) -> Option<String> {
    let challenge = Challenge::parse(header(msg, "WWW-Authenticate")?).ok()?;
    let password = format!("pw{user}");
    let username = format!("u{user}");
    let cnonce = format!("cn{user}");
    let uri = format!("sip:{DOMAIN}");
    digest::respond(
        &challenge,
        &ClientInput {
            username: &username,
            password: &password,
            method: "REGISTER",
            uri: &uri,
            cnonce: &cnonce,
            nc: 1,
            body: &[],
        },
    )
    .ok()
}

/// What a REGISTER run counted.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: u64,
    challenged: u64,
    refused: u64,
    retransmitted: u64,
    lost: u64,
    /// The status of the last refusal (0: none, or not a status line).
    last_refusal: u16,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.ok += o.ok;
        self.challenged += o.challenged;
        self.refused += o.refused;
        self.retransmitted += o.retransmitted;
        self.lost += o.lost;
        if o.last_refusal != 0 {
            self.last_refusal = o.last_refusal;
        }
    }
}

/// One source's share of a REGISTER run: its users (`index`, `index +
/// sources`, …), `window` in flight; once through them (`once`) or
/// round and round until `until`.
async fn udp_source(
    index: usize,
    sources: usize,
    users: usize,
    window: usize,
    server: SocketAddr,
    once: bool,
    until: Instant,
) -> anyhow::Result<Counts> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(source(3, index).into(), 0)).await?;
    let local = socket.local_addr()?;
    let mine: Vec<usize> = (index..users).step_by(sources).collect();
    let mut cseq: HashMap<usize, u32> = mine.iter().map(|u| (*u, 1)).collect();
    let mut counts = Counts::default();
    let mut next = 0usize;
    // user -> (sent at, the request, retransmissions so far)
    let mut in_flight: HashMap<usize, (Instant, Vec<u8>, u32)> = HashMap::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        // fill the window
        while in_flight.len() < window && (!once || next < mine.len()) {
            let Some(&user) = mine.get(next % mine.len().max(1)) else {
                break;
            };
            next += 1;
            if in_flight.contains_key(&user) {
                break;
            }
            let c = cseq.entry(user).or_insert(1);
            *c += 1;
            let req = register(user, *c, local, "udp", None);
            socket.send_to(&req, server).await?;
            in_flight.insert(user, (now, req, 0));
        }
        if in_flight.is_empty() {
            break;
        }
        let wait = until.min(now + RETRANSMIT);
        match tokio::time::timeout_at(wait.into(), socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                let msg = buf.get(..n).unwrap_or_default();
                let Some(user) = user_of(msg) else { continue };
                match status(msg) {
                    Some(200..=299) => {
                        counts.ok += 1;
                        in_flight.remove(&user);
                    }
                    Some(401) => {
                        counts.challenged += 1;
                        match answer_challenge(msg, user) {
                            Some(a) => {
                                let c = cseq.entry(user).or_insert(1);
                                *c += 1;
                                let req = register(user, *c, local, "udp", Some(&a));
                                socket.send_to(&req, server).await?;
                                in_flight.insert(user, (Instant::now(), req, 0));
                            }
                            None => {
                                counts.refused += 1;
                                in_flight.remove(&user);
                            }
                        }
                    }
                    Some(100..=199) => {}
                    code => {
                        counts.refused += 1;
                        counts.last_refusal = code.unwrap_or(0);
                        in_flight.remove(&user);
                    }
                }
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                // silence: what has waited RETRANSMIT goes again (a UA's
                // Timer E), up to 4 times; then it is lost
                let before = Instant::now() - RETRANSMIT;
                let mut gone = Vec::new();
                for (user, (at, req, tries)) in in_flight.iter_mut() {
                    if *at > before {
                        continue;
                    }
                    if *tries >= 4 {
                        gone.push(*user);
                        continue;
                    }
                    *tries += 1;
                    *at = Instant::now();
                    counts.retransmitted += 1;
                    socket.send_to(req, server).await?;
                }
                for u in gone {
                    in_flight.remove(&u);
                    counts.lost += 1;
                }
            }
        }
    }
    Ok(counts)
}

/// A REGISTER run from `sources` addresses on a generator thread of its
/// own; returns the counts, the seconds it took and the generator's CPU
/// seconds.
fn udp_run(
    server: SocketAddr,
    users: usize,
    sources: usize,
    window: usize,
    once: bool,
    seconds: u64,
) -> anyhow::Result<(Counts, f64, f64)> {
    let per_source = (window / sources).max(1);
    std::thread::spawn(move || -> anyhow::Result<(Counts, f64, f64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cpu0 = thread_cpu();
        let start = Instant::now();
        let until = start + Duration::from_secs(seconds);
        let counts = rt.block_on(async move {
            let tasks: Vec<_> = (0..sources)
                .map(|i| {
                    tokio::spawn(udp_source(
                        i, sources, users, per_source, server, once, until,
                    ))
                })
                .collect();
            let mut total = Counts::default();
            for t in tasks {
                total.add(t.await??);
            }
            anyhow::Ok(total)
        })?;
        Ok((counts, start.elapsed().as_secs_f64(), thread_cpu() - cpu0))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
}

/// CPU time of the calling thread, seconds.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let f: Vec<f64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            Some((f.first()? + f.get(1)?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// One flow: connect from `local` and register user `user` over it;
/// `None` if it did not come up.
async fn flow_up(
    user: usize,
    local: Ipv4Addr,
    server: SocketAddr,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(local.into(), 0)).ok()?;
    let _permit = gate.acquire().await.ok()?;
    let mut stream = socket.connect(server).await.ok()?;
    let me = stream.local_addr().ok()?;
    stream
        .write_all(&register(user, 2, me, "tcp", None))
        .await
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(buf.get(..n)?);
    }
    matches!(status(&got), Some(200..=299)).then_some(stream)
}

/// Pings a flow every `interval`, the first after `offset`, until
/// `until`; the pong latencies in microseconds, and whether the flow
/// held to the end. The flow stays open until `until` whatever: a flow
/// closing while others are measured would measure the server's
/// clean-up, not its pongs.
async fn flow_pings(
    mut stream: tokio::net::TcpStream,
    offset: Duration,
    interval: Duration,
    until: tokio::time::Instant,
) -> (Vec<u32>, bool) {
    let r = flow_pings_on(&mut stream, offset, interval, until).await;
    tokio::time::sleep_until(until).await;
    drop(stream);
    r
}

async fn flow_pings_on(
    stream: &mut tokio::net::TcpStream,
    offset: Duration,
    interval: Duration,
    until: tokio::time::Instant,
) -> (Vec<u32>, bool) {
    let mut lat = Vec::new();
    let mut at = tokio::time::Instant::now() + offset;
    let mut pong = [0u8; 64];
    while at < until {
        tokio::time::sleep_until(at).await;
        let t0 = Instant::now();
        if stream.write_all(b"\r\n\r\n").await.is_err() {
            return (lat, false);
        }
        match stream.read(&mut pong).await {
            Ok(n) if n > 0 => lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX)),
            _ => return (lat, false),
        }
        at += interval;
    }
    (lat, true)
}

/// What the flow run measured.
struct FlowRun {
    up: usize,
    pss_per_flow: f64,
    p50_us: u32,
    p99_us: u32,
    pongs: usize,
    dropped: usize,
    server_cpu_pct: f64,
    generator_cpu_pct: f64,
}

/// `flows` TCP flows to `server`, each registered; memory taken once all
/// are up; then pings on each every `interval` for `seconds`.
fn flow_run(
    server_proc: &Server,
    server: SocketAddr,
    flows: usize,
    interval: u64,
    seconds: u64,
) -> anyhow::Result<FlowRun> {
    let pss0 = server_proc.pss();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // connect and register, 256 at a time
    let streams: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
        let tasks: Vec<_> = (0..flows)
            .map(|i| tokio::spawn(flow_up(i, source(4, i), server, gate.clone())))
            .collect();
        let mut up = Vec::with_capacity(flows);
        for t in tasks {
            if let Ok(Some(s)) = t.await {
                up.push(s);
            }
        }
        up
    });
    // let the server settle, then take its memory
    std::thread::sleep(Duration::from_millis(500));
    let pss1 = server_proc.pss();
    let up = streams.len();
    let cpu0 = thread_cpu();
    let server_cpu0 = server_proc.cpu();
    let start = Instant::now();
    let results: Vec<(Vec<u32>, bool)> = rt.block_on(async {
        let interval = Duration::from_secs(interval);
        let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let n = streams.len().max(1);
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let offset = interval.mul_f64(i as f64 / n as f64);
                tokio::spawn(flow_pings(s, offset, interval, until))
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.unwrap_or_default());
        }
        out
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = thread_cpu() - cpu0;
    let server_cpu = server_proc.cpu() - server_cpu0;
    let dropped = results.iter().filter(|(_, held)| !held).count();
    let mut lat: Vec<u32> = results.into_iter().flat_map(|(l, _)| l).collect();
    lat.sort_unstable();
    let pct = |q: f64| -> u32 {
        let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
        lat.get(i).copied().unwrap_or(0)
    };
    drop(rt);
    Ok(FlowRun {
        up,
        pss_per_flow: pss1.saturating_sub(pss0) as f64 / up.max(1) as f64,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        pongs: lat.len(),
        dropped,
        server_cpu_pct: server_cpu / wall * 100.0,
        generator_cpu_pct: cpu / wall * 100.0,
    })
}

/// One server's figures for one auth setting: memory per binding after
/// `bindings` AoRs registered once, then REGISTER/s for `seconds`.
fn register_part(
    server: &Server,
    addr: SocketAddr,
    b: &EdgeBench,
    part: &str,
    json_out: bool,
) -> anyhow::Result<Value> {
    let pss0 = server.pss();
    let (fill, fill_secs, _) = udp_run(addr, b.bindings, b.sources, b.window, true, 600)?;
    std::thread::sleep(Duration::from_millis(500));
    let pss1 = server.pss();
    let cpu0 = server.cpu();
    let (run, secs, gen_cpu) = udp_run(addr, b.bindings, b.sources, b.window, false, b.seconds)?;
    let server_cpu = server.cpu() - cpu0;
    let v = json!({
        "event": "bench",
        "bench": "edge",
        "server": server.name(),
        "part": part,
        "bindings": fill.ok,
        "fill_seconds": (fill_secs * 100.0).round() / 100.0,
        "bytes_per_binding": (pss1.saturating_sub(pss0) as f64 / fill.ok.max(1) as f64).round(),
        "registers_per_second": (run.ok as f64 / secs).round(),
        "challenged": run.challenged,
        "refused": run.refused + fill.refused,
        "last_refusal": run.last_refusal.max(fill.last_refusal),
        "retransmitted": run.retransmitted + fill.retransmitted,
        "lost": run.lost + fill.lost,
        "server_cpu_percent": (server_cpu / secs * 1000.0).round() / 10.0,
        "generator_cpu_percent": (gen_cpu / secs * 1000.0).round() / 10.0,
    });
    emit(json_out, v.clone());
    Ok(v)
}

/// `siproam bench edge`.
pub async fn edge(b: EdgeBench, json_out: bool) -> anyhow::Result<ExitCode> {
    if b.bindings == 0 || b.sources == 0 || b.window == 0 || b.seconds == 0 || b.interval == 0 {
        bail!("--bindings, --sources, --window, --seconds and --interval must be at least 1");
    }
    if b.sources > 60_000 || b.flows > 60_000 {
        bail!("--sources and --flows are at most 60000 (their own loopback addresses)");
    }
    // the generator holds a socket per flow and per source
    let want = u64::try_from(b.flows + b.sources)? + 256;
    let limit = siproam::raise_open_files_limit_to(want).unwrap_or(0);
    if limit < want {
        bail!(
            "the open-files limit is {limit}; {want} are needed (lower --flows to {} or raise the hard limit)",
            limit.saturating_sub(u64::try_from(b.sources)? + 256)
        );
    }
    let users = users_file(b.bindings.max(b.flows))?;
    let b2 = b.clone();
    let users2 = users.clone();
    let results = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Value>> {
        let b = b2;
        let users = users2;
        let mut out = Vec::new();
        let mut kinds = vec!["siproam"];
        if b.kamailio {
            kinds.push("kamailio");
        }
        for kind in kinds {
            for auth in [false, true] {
                let (server, udp, _) = match kind {
                    "siproam" => start_siproam(auth.then_some(users.as_path()), b.flows + 64)?,
                    _ => start_kamailio(&users, auth)?,
                };
                let part = if auth {
                    "register_udp_digest"
                } else {
                    "register_udp"
                };
                out.push(register_part(&server, udp, &b, part, json_out)?);
            }
            if kind == "siproam" && b.edge {
                // the same load through `siproam edge` in front of it: the
                // edge's cost (memory is the edge's and registrar's PSS)
                // behind one trusted edge, the registrar's per-source budget
                // is off (as its --help says to deploy it)
                let (registrar, reg_udp, _) = start_child(
                    "registrar",
                    &[
                        "--domain".into(),
                        DOMAIN.into(),
                        "--max-rate-per-source".into(),
                        "0".into(),
                    ],
                    1024,
                )?;
                let (edge, edge_udp, _) = start_child(
                    "edge",
                    &["--registrar".into(), format!("sip:{reg_udp}")],
                    1024,
                )?;
                let both = Server::Pair(Box::new(edge), Box::new(registrar));
                out.push(register_part(
                    &both,
                    edge_udp,
                    &b,
                    "register_udp_via_edge",
                    json_out,
                )?);
            }
            if kind == "siproam" && b.redis {
                let redis = Redis::start()?;
                let (server, udp, _) = start_child(
                    "registrar",
                    &[
                        "--domain".into(),
                        DOMAIN.into(),
                        "--store".into(),
                        format!("redis://127.0.0.1:{}", redis.1),
                    ],
                    1024,
                )?;
                out.push(register_part(
                    &server,
                    udp,
                    &b,
                    "register_udp_redis",
                    json_out,
                )?);
                drop(server);
                drop(redis);
            }
            if b.flows > 0 {
                let (server, _, tcp) = match kind {
                    "siproam" => start_siproam(None, b.flows + 64)?,
                    _ => start_kamailio(&users, false)?,
                };
                let f = flow_run(&server, tcp, b.flows, b.interval, b.seconds)?;
                let v = json!({
                    "event": "bench",
                    "bench": "edge",
                    "server": server.name(),
                    "part": "tcp_flows",
                    "flows": f.up,
                    "bytes_per_flow": f.pss_per_flow.round(),
                    "interval_s": b.interval,
                    "pongs": f.pongs,
                    "pong_p50_us": f.p50_us,
                    "pong_p99_us": f.p99_us,
                    "flows_dropped": f.dropped,
                    "server_cpu_percent": (f.server_cpu_pct * 10.0).round() / 10.0,
                    "generator_cpu_percent": (f.generator_cpu_pct * 10.0).round() / 10.0,
                });
                emit(json_out, v.clone());
                out.push(v);
            }
        }
        Ok(out)
    })
    .await?;
    let _ = std::fs::remove_file(&users);
    let results = results?;
    // the ratios the bars are about
    let find = |server: &str, part: &str, key: &str| {
        results
            .iter()
            .find(|v| v["server"] == server && v["part"] == part)
            .and_then(|v| v[key].as_f64())
    };
    let mut summary = serde_json::Map::new();
    for (k, v) in [("event", "bench"), ("bench", "edge"), ("part", "summary")] {
        summary.insert(k.into(), json!(v));
    }
    for part in ["register_udp", "register_udp_digest"] {
        if let (Some(s), Some(k)) = (
            find("siproam", part, "registers_per_second"),
            find("kamailio", part, "registers_per_second"),
        ) {
            summary.insert(
                format!("{part}_vs_kamailio"),
                json!((s / k.max(1.0) * 100.0).round() / 100.0),
            );
        }
    }
    emit(json_out, Value::Object(summary));
    Ok(ExitCode::SUCCESS)
}
