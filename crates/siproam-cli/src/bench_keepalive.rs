//! `siproam bench keepalive --netns`: how long a silently dead flow takes
//! to be found and replaced, on real (namespaced) networks.
//!
//! The topology is `interop/netns/topology.sh`. The registrar runs in the
//! server namespace, Alice in the handset one, both in this process; Alice
//! registers over TCP with outbound and a short keep-alive interval. Each
//! run makes her registration flow silently dead: an nftables rule in the
//! router drops that connection's packets both ways (the path failure the
//! keep-alive exists for; a blackhole route would fail the send at once).
//! `tcpdump` in the handset namespace gives the kernel's time of the
//! first ping (CRLFCRLF, four bytes) that crosses after the rule; the
//! bench takes the time of the `flow failed` event and of the next
//! REGISTER 2xx. RFC 5626 §4.4.1 wants the failure found within the pong
//! timeout of that ping.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;
use siproam::core::{Config, Event, FlowState, RegistrationState};
use siproam::edge::RegistrarApp;
use siproam::transport::Transport;
use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, FlowSpec, UserAgent};
use siproam_edge::Registrar;

use crate::bench_netns::{start_in, Topology};
use crate::run::emit;

const SERVER: &str = "10.9.0.2";

/// Seconds since the Unix epoch, now (the clock tcpdump stamps with).
fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `tcpdump` in a namespace, printing one line per captured packet with
/// its kernel time; the lines come through a channel. Killed on drop.
struct Capture {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Capture {
    fn start(ns: &str, iface: &str, filter: &str) -> anyhow::Result<Capture> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", iface])
            .args(["-l", "-n", "-tt", "--immediate-mode", "-Q", "out"])
            .arg(filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (Debian package tcpdump)")?;
        let out = child.stdout.take().context("tcpdump stdout")?;
        let err = child.stderr.take().context("tcpdump stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // tcpdump says "listening on …" on stderr once it captures
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
            }
        });
        if ready.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("tcpdump did not start capturing in the handset namespace");
        }
        Ok(Capture { child, lines })
    }

    /// The kernel time of the first packet captured from local port
    /// `port` stamped at or after `since`, waiting up to `wait`. (A
    /// connection closed earlier still retransmits its last, unanswered
    /// ping for a while: those are not this flow's.)
    fn first_after(&self, since: f64, port: u16, wait: Duration) -> Option<f64> {
        let deadline = std::time::Instant::now() + wait;
        // tcpdump -n: "TIME IP 10.1.0.2.PORT > 10.9.0.2.5060: …"
        let from = format!(".{port} >");
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let Some(t) = line
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<f64>().ok())
            else {
                continue;
            };
            if t >= since && line.contains(&from) {
                return Some(t);
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `nft -f -` with `script` in namespace `ns`.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (Debian package nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One run's figures, in seconds of the wall clock.
struct Run {
    ping: f64,
    failed: f64,
    registered: f64,
}

/// `siproam bench keepalive --netns`.
pub async fn netns(
    runs: usize,
    keepalive: u64,
    pong_timeout: u64,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    if keepalive == 0 || pong_timeout == 0 {
        bail!("--interval and --pong-timeout must be at least 1 second");
    }
    let topo = Topology::up()?;
    let (h, r, s) = (topo.ns('h'), topo.ns('r'), topo.ns('s'));
    let mut registrar = start_in(
        &s,
        EndpointConfig {
            listen: vec![(Transport::Tcp, format!("{SERVER}:5060").parse()?)],
            core: Config {
                dialogs: false,
                ..Config::default()
            },
            ..Default::default()
        },
        Box::new(RegistrarApp::new(Registrar::new(
            crate::run::registrar_config()?,
        ))),
    )?;
    let registrar_task =
        tokio::spawn(async move { while registrar.next_event().await.is_some() {} });
    let mut alice = start_in(
        &h,
        EndpointConfig {
            listen: vec![(Transport::Tcp, "0.0.0.0:0".parse()?)],
            ..Default::default()
        },
        Box::new(UserAgent),
    )?;
    // only pings: a TCP payload of exactly CRLFCRLF
    let capture = Capture::start(
        &h,
        "wifi0",
        &format!("tcp and dst host {SERVER} and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x0d0a0d0a"),
    )?;
    let instance = siproam::random::instance_id()?;
    alice
        .register(AccountSpec {
            aor: "sip:alice@example.test".to_owned(),
            registrar: format!("sip:{SERVER}:5060;transport=tcp"),
            username: None,
            password: None,
            instance_id: Some(instance),
            outbound: true,
            reg_id: Some(1),
            expires: 3600,
            ipv6_sip: siproam::Ipv6Use::Enabled,
            ipv6_media: siproam::Ipv6Use::Enabled,
            ip_change: None,
            flow: FlowSpec {
                keepalive_stream: Some(Duration::from_secs(keepalive)),
                pong_timeout: Duration::from_secs(pong_timeout),
                ..FlowSpec::default()
            },
        })
        .await?;
    let patience = Duration::from_secs(keepalive + pong_timeout + 30);
    let mut local = wait_flow_up(&mut alice, patience).await?;
    let mut done = Vec::new();
    for _ in 0..runs {
        // a pong first: the flow works before it is cut
        wait_flow(&mut alice, FlowState::KeepaliveOk, patience).await?;
        let cut = wall();
        let port = local.port();
        nft(
            &r,
            &format!(
                "table inet srbench {{\n chain c {{\n  type filter hook forward priority 0;\n  \
                 tcp sport {port} drop\n  tcp dport {port} drop\n }}\n}}\n"
            ),
        )?;
        let failed = wait_flow(&mut alice, FlowState::Failed, patience).await?;
        // the next REGISTER 2xx (over a new connection, which the rule
        // lets through) and the new flow
        let registered = wait_registered(&mut alice, patience).await?;
        local = wait_flow_up(&mut alice, patience).await?;
        nft(&r, "delete table inet srbench\n")?;
        let ping = capture
            .first_after(cut, port, Duration::from_secs(1))
            .context("no ping captured after the cut")?;
        done.push(Run {
            ping,
            failed,
            registered,
        });
    }
    drop(capture);
    alice.shutdown().await;
    registrar_task.abort();
    drop(topo);

    let ms = |x: f64| (x * 1000.0 * 10.0).round() / 10.0;
    let mut to_failed: Vec<f64> = done.iter().map(|r| ms(r.failed - r.ping)).collect();
    let mut to_registered: Vec<f64> = done.iter().map(|r| ms(r.registered - r.ping)).collect();
    let mut over: Vec<f64> = to_failed
        .iter()
        .map(|f| ms(f / 1000.0 - pong_timeout as f64))
        .collect();
    for v in [&mut to_failed, &mut to_registered, &mut over] {
        v.sort_by(f64::total_cmp);
    }
    let stat = |v: &Vec<f64>| {
        json!({
            "p50": crate::bench::percentile(v, 0.5),
            "max": v.last().copied().unwrap_or(0.0),
            "n": v.len(),
        })
    };
    emit(
        json_out,
        json!({
            "event": "bench",
            "bench": "keepalive-netns",
            "runs": runs,
            "keepalive_s": keepalive,
            "pong_timeout_s": pong_timeout,
            "ping_to_failed_ms": stat(&to_failed),
            "failed_beyond_pong_timeout_ms": stat(&over),
            "ping_to_register_2xx_ms": stat(&to_registered),
            "from": "the kernel's time of the first unanswered ping (tcpdump in the handset namespace)",
        }),
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits for the flow to come up; returns its local address.
async fn wait_flow_up(alice: &mut EndpointHandle, wait: Duration) -> anyhow::Result<SocketAddr> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, alice.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Flow(f)))) if f.state == FlowState::Up => {
                return f.local.context("the flow's local address is unknown");
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("Alice's endpoint stopped"),
            Err(_) => bail!("no flow came up within {wait:?}"),
        }
    }
}

/// Waits for a flow event in `state`; returns its wall time.
async fn wait_flow(
    alice: &mut EndpointHandle,
    state: FlowState,
    wait: Duration,
) -> anyhow::Result<f64> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, alice.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Flow(f)))) if f.state == state => return Ok(wall()),
            Ok(Some(_)) => {}
            Ok(None) => bail!("Alice's endpoint stopped"),
            Err(_) => bail!("no flow {} within {wait:?}", state.as_str()),
        }
    }
}

/// Waits for a REGISTER 2xx; returns its wall time.
async fn wait_registered(alice: &mut EndpointHandle, wait: Duration) -> anyhow::Result<f64> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, alice.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Registration(r))))
                if r.state == RegistrationState::Registered =>
            {
                return Ok(wall())
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("Alice's endpoint stopped"),
            Err(_) => bail!("not registered again within {wait:?}"),
        }
    }
}

/// `siproam bench keepalive --accounts N`: one endpoint, N accounts, each
/// registered with outbound over its own TCP connection (its own local
/// address, 127.1.x.y) to a `siproam registrar` child process; once all
/// are up, keep-alives run every `interval` seconds (pings at 80–100 % of
/// it) for `seconds`. Reports this process's CPU during that window (% of
/// one core), its resident memory per account, the registrar's CPU, and the
/// pongs and failures seen.
pub async fn accounts(
    n: usize,
    interval: u64,
    seconds: u64,
    floor: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if n == 0 || n > 60_000 {
        bail!("--accounts must be between 1 and 60000");
    }
    if interval == 0 || seconds == 0 {
        bail!("--interval and --seconds must be at least 1");
    }
    // a connection each; the registrar child holds the other ends (and
    // raises its own limit for --max-connections)
    let want = u64::try_from(n)? + 1024;
    let limit = siproam::raise_open_files_limit_to(want).unwrap_or(0);
    if limit < want {
        bail!("the open-files limit is {limit}; {want} are needed (raise the hard limit)");
    }
    let (mut child, addr) = crate::bench::spawn_registrar(&[
        "registrar".to_owned(),
        "--json".to_owned(),
        "--listen".to_owned(),
        "tcp:127.0.0.1:0".to_owned(),
        "--max-rate-per-source".to_owned(),
        "0".to_owned(),
        "--max-connections".to_owned(),
        (n + 64).to_string(),
    ])?;
    if floor {
        let remote: SocketAddr = addr.parse().context("the registrar's address")?;
        let pid = child.id().to_string();
        let result =
            tokio::task::spawn_blocking(move || floor_run(n, interval, seconds, remote, &pid))
                .await;
        let _ = child.kill();
        let _ = child.wait();
        let f = result??;
        emit(
            json_out,
            json!({
                "event": "bench",
                "bench": "keepalive",
                "mode": "floor",
                "accounts": n,
                "interval_s": interval,
                "window_s": (f.wall * 10.0).round() / 10.0,
                "pings": f.pings,
                "pongs": f.pongs,
                "pongs_per_second": (f.pongs as f64 / f.wall).round(),
                "cpu_percent_of_one_core": f.pct(f.cpu),
                "registrar_cpu_percent_of_one_core": f.pct(f.registrar_cpu),
            }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let registrar = format!("sip:{addr};transport=tcp");
    // no listener: each account's Contact is its connection's address
    let mut config = EndpointConfig::default();
    config.transport.max_connections = n + 64;
    let mut ep = EndpointHandle::start(config, Box::new(UserAgent)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_before = crate::bench::rss_bytes().unwrap_or(0);
    let register_start = std::time::Instant::now();
    let crate::bench::Registered {
        registered, failed, ..
    } = crate::bench::register_windowed(&mut ep, n, 256, Duration::from_secs(300), |next| {
        let local = std::net::Ipv4Addr::new(127, 1, (next / 250) as u8, (next % 250 + 1) as u8);
        Ok(AccountSpec {
            aor: format!("sip:ka{next}@example.test"),
            registrar: registrar.clone(),
            username: None,
            password: None,
            instance_id: Some(siproam::random::instance_id()?),
            outbound: true,
            reg_id: Some(1),
            expires: 3600,
            ipv6_sip: siproam::Ipv6Use::Enabled,
            ipv6_media: siproam::Ipv6Use::Enabled,
            ip_change: None,
            flow: FlowSpec {
                local_ip: Some(local.into()),
                keepalive_stream: Some(Duration::from_secs(interval)),
                ..FlowSpec::default()
            },
        })
    })
    .await?;
    let register_secs = register_start.elapsed().as_secs_f64();
    let rss_after = crate::bench::rss_bytes().unwrap_or(0);
    // the keep-alive window
    let pid = child.id().to_string();
    let (cpu0, reg_cpu0) = (
        crate::bench::cpu_seconds().unwrap_or(0.0),
        crate::bench::cpu_seconds_of(&pid).unwrap_or(0.0),
    );
    let start = std::time::Instant::now();
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let (mut pongs, mut flow_failed) = (0u64, 0u64);
    loop {
        match tokio::time::timeout_at(until, ep.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Flow(f)))) => match f.state {
                FlowState::KeepaliveOk => pongs += 1,
                FlowState::Failed => flow_failed += 1,
                _ => {}
            },
            Ok(Some(_)) => {}
            Ok(None) => bail!("the endpoint stopped"),
            Err(_) => break,
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = crate::bench::cpu_seconds().unwrap_or(0.0) - cpu0;
    let reg_cpu = crate::bench::cpu_seconds_of(&pid).unwrap_or(0.0) - reg_cpu0;
    let rss_end = crate::bench::rss_bytes().unwrap_or(0);
    let pct = |c: f64| (c / wall * 100.0 * 100.0).round() / 100.0;
    emit(
        json_out,
        json!({
            "event": "bench",
            "bench": "keepalive",
            "accounts": n,
            "registered": registered,
            "failed_registrations": failed,
            "register_seconds": (register_secs * 1000.0).round() / 1000.0,
            "interval_s": interval,
            "window_s": (wall * 10.0).round() / 10.0,
            "pongs": pongs,
            "pongs_per_second": (pongs as f64 / wall).round(),
            "flows_failed": flow_failed,
            "cpu_percent_of_one_core": pct(cpu),
            "registrar_cpu_percent_of_one_core": pct(reg_cpu),
            "rss_per_account_bytes": (rss_after.saturating_sub(rss_before) as f64 / n as f64).round(),
            "rss_per_account_end_bytes": (rss_end.saturating_sub(rss_before) as f64 / n as f64).round(),
            "rss_before_bytes": rss_before,
        }),
    );
    ep.shutdown().await;
    let _ = child.kill();
    let _ = child.wait();
    Ok(if registered == n && flow_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What the floor run measured.
struct Floor {
    wall: f64,
    cpu: f64,
    registrar_cpu: f64,
    pings: u64,
    pongs: u64,
}

impl Floor {
    fn pct(&self, c: f64) -> f64 {
        (c / self.wall * 100.0 * 100.0).round() / 100.0
    }
}

/// The kernel's share: `n` plain TCP connections (from the same local
/// addresses as the accounts), each first carrying one OPTIONS so the
/// registrar treats it as a SIP flow, then pinged on one thread with no
/// runtime and no readiness polling — every 20 ms the due pings are
/// written and the pongs of the previous ones read, one system call each.
/// What is left between this and the endpoint's figure is ours.
fn floor_run(
    n: usize,
    interval: u64,
    seconds: u64,
    remote: SocketAddr,
    registrar_pid: &str,
) -> anyhow::Result<Floor> {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    const TICK: Duration = Duration::from_millis(20);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let local = std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(local.into(), 0).into())?;
        socket.connect(&remote.into())?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let via = stream.local_addr()?;
        let options = format!(
            "OPTIONS sip:{remote};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {via};branch=z9hG4bKfloor{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:floor{i}@example.test>;tag=f{i}\r\nTo: <sip:{remote}>\r\n\
             Call-ID: floor{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(options.as_bytes())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = stream
                .read(&mut buf)
                .context("the registrar's answer to OPTIONS")?;
            if k == 0 {
                bail!("the registrar closed connection {i}");
            }
            got.extend_from_slice(buf.get(..k).unwrap_or_default());
        }
        stream.set_nonblocking(true)?;
        conns.push(stream);
    }
    // each connection's next ping: 80-100 % of the interval, as the
    // endpoint draws it (a small xorshift: no need for a secure source)
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut draw = |base: Duration| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        base.mul_f64(0.8 + 0.2 * (seed % 10_000) as f64 / 10_000.0)
    };
    let period = Duration::from_secs(interval);
    let start = std::time::Instant::now();
    // the first pings spread over one interval: the window is steady from
    // its start, as the endpoint's is once every account has registered
    let mut due: std::collections::BinaryHeap<std::cmp::Reverse<(std::time::Instant, usize)>> = (0
        ..n)
        .map(|i| std::cmp::Reverse((start + period.mul_f64(i as f64 / n as f64), i)))
        .collect();
    let (cpu0, reg0) = (
        crate::bench::cpu_seconds().unwrap_or(0.0),
        crate::bench::cpu_seconds_of(registrar_pid).unwrap_or(0.0),
    );
    let until = start + Duration::from_secs(seconds);
    let (mut pings, mut pongs) = (0u64, 0u64);
    let mut awaiting: Vec<usize> = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let now = std::time::Instant::now();
        if now >= until {
            break;
        }
        // the pongs of the pings sent one tick ago
        awaiting.retain(|&i| match conns.get_mut(i).map(|c| c.read(&mut buf)) {
            Some(Ok(k)) if k > 0 => {
                pongs += 1;
                false
            }
            Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => true,
            _ => false,
        });
        while let Some(std::cmp::Reverse((at, i))) = due.peek().copied() {
            if at > now {
                break;
            }
            due.pop();
            if let Some(c) = conns.get_mut(i) {
                if c.write(b"\r\n\r\n").is_ok() {
                    pings += 1;
                    awaiting.push(i);
                }
            }
            due.push(std::cmp::Reverse((at + draw(period), i)));
        }
        std::thread::sleep(TICK);
    }
    let wall = start.elapsed().as_secs_f64();
    Ok(Floor {
        wall,
        cpu: crate::bench::cpu_seconds().unwrap_or(0.0) - cpu0,
        registrar_cpu: crate::bench::cpu_seconds_of(registrar_pid).unwrap_or(0.0) - reg0,
        pings,
        pongs,
    })
}
