//! `siproam bench …`: whole-system benchmarks (figures, never assertions).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use siproam::core::{Event, RegistrationState};
use siproam::transport::Transport;
use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, UserAgent};

use crate::run::emit;

/// A process's resident memory, in bytes (Linux `/proc/PID/status`).
pub(crate) fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's resident memory, in bytes.
pub(crate) fn rss_bytes() -> Option<u64> {
    rss_of(std::process::id())
}

/// `siproam bench register --accounts N`: one endpoint, N accounts,
/// registering to a `siproam registrar` child process on loopback; reports
/// the wall time until all are registered and the endpoint's resident
/// memory per account.
pub async fn register(
    accounts: usize,
    transport: &str,
    auth: bool,
    window: usize,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if accounts == 0 {
        bail!("--accounts must be at least 1");
    }
    let t = match transport {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        other => bail!("--transport {other}: udp or tcp"),
    };
    let dir = std::env::temp_dir().join(format!("siproam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let listen = format!("{transport}:127.0.0.1:0");
    let mut args = vec![
        "registrar".to_owned(),
        "--json".to_owned(),
        "--listen".to_owned(),
        listen,
        // every account registers from this one address: a throughput
        // benchmark, not a flood
        "--max-rate-per-source".to_owned(),
        "0".to_owned(),
    ];
    if auth {
        let users = dir.join("users.txt");
        let mut f = std::fs::File::create(&users)?;
        for i in 0..accounts {
            writeln!(f, "user{i}:pw{i}")?;
        }
        args.extend(["--users".to_owned(), users.to_string_lossy().into_owned()]);
    }
    let (mut child, addr) = spawn_registrar(&args)?;
    let registrar_uri = if t == Transport::Udp {
        format!("sip:{addr}")
    } else {
        format!("sip:{addr};transport=tcp")
    };

    let listen = vec![
        (Transport::Udp, "127.0.0.2:0".parse()?),
        (Transport::Tcp, "127.0.0.2:0".parse()?),
    ];
    let mut ep = EndpointHandle::start(
        EndpointConfig {
            listen,
            ..Default::default()
        },
        Box::new(UserAgent),
    )
    .await?;
    // settle, then measure the baseline
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_before = rss_bytes().unwrap_or(0);
    let start = Instant::now();
    let Registered {
        registered,
        failed,
        failures,
    } = register_windowed(
        &mut ep,
        accounts,
        window,
        Duration::from_secs(120),
        |next| {
            Ok(AccountSpec {
                aor: format!("sip:user{next}@example.test"),
                registrar: registrar_uri.clone(),
                username: None,
                password: auth.then(|| format!("pw{next}")),
                instance_id: None,
                outbound: false,
                reg_id: None,
                expires: 3600,
                ipv6_sip: siproam::Ipv6Use::Enabled,
                ipv6_media: siproam::Ipv6Use::Enabled,
                ip_change: None,
                flow: Default::default(),
            })
        },
    )
    .await?;
    let elapsed = start.elapsed();
    let rss_after = rss_bytes().unwrap_or(0);
    let per_account = rss_after.saturating_sub(rss_before) as f64 / accounts as f64;
    emit(
        json_out,
        json!({
            "event": "bench",
            "bench": "register",
            "transport": transport,
            "auth": auth,
            "accounts": accounts,
            "registered": registered,
            "failed": failed,
            "failures": failures,
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "per_second": (registered as f64 / elapsed.as_secs_f64()).round(),
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "rss_per_account_bytes": per_account.round(),
        }),
    );
    ep.shutdown().await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    Ok(if registered == accounts {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What [`register_windowed`] saw.
pub(crate) struct Registered {
    /// Accounts registered.
    pub registered: usize,
    /// Accounts whose registration failed.
    pub failed: usize,
    /// Failures by cause.
    pub failures: std::collections::BTreeMap<String, usize>,
}

/// Registers `n` accounts on `ep` (the i-th described by `spec(i)`), at
/// most `window` in flight at once, waiting at most `budget` in all.
pub(crate) async fn register_windowed(
    ep: &mut EndpointHandle,
    n: usize,
    window: usize,
    budget: Duration,
    mut spec: impl FnMut(usize) -> anyhow::Result<AccountSpec>,
) -> anyhow::Result<Registered> {
    let deadline = tokio::time::Instant::now() + budget;
    let (mut next, mut in_flight) = (0usize, 0usize);
    let mut r = Registered {
        registered: 0,
        failed: 0,
        failures: std::collections::BTreeMap::new(),
    };
    let mut progress = crate::progress::Progress::new("accounts registered", n as u64);
    while r.registered + r.failed < n {
        progress.set((r.registered + r.failed) as u64);
        while in_flight < window && next < n {
            ep.register(spec(next)?).await?;
            next += 1;
            in_flight += 1;
        }
        match tokio::time::timeout_at(deadline, ep.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Registration(ev)))) => match ev.state {
                RegistrationState::Registered => {
                    r.registered += 1;
                    in_flight = in_flight.saturating_sub(1);
                }
                RegistrationState::Failed => {
                    *r.failures.entry(format!("{:?}", ev.failure)).or_insert(0) += 1;
                    r.failed += 1;
                    in_flight = in_flight.saturating_sub(1);
                }
                _ => {}
            },
            Ok(Some(_)) => {}
            Ok(None) => bail!("the endpoint stopped"),
            Err(_) => break,
        }
    }
    progress.finish();
    Ok(r)
}

/// Starts this binary as a child with `args` (a `registrar …` command
/// line with `--json`) and waits for its `listening` event; returns the
/// child and the address it listens on. Its output is drained on a
/// thread so it never blocks on a full pipe.
pub(crate) fn spawn_registrar(args: &[String]) -> anyhow::Result<(std::process::Child, String)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("registrar stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the registrar exited before listening");
        }
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v.get("event").and_then(Value::as_str) == Some("listening") {
            break v
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
        }
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    Ok((child, addr))
}

/// CPU time this process has used (user + system), from `/proc/self/stat`
/// (clock ticks of 10 ms).
pub(crate) fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of("self")
}

/// CPU time of process `pid` (`self` for this one), in seconds.
pub(crate) fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces: fields start after the last ')'
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// `siproam bench calls --calls N`: N simultaneous calls between two
/// endpoints of this process on loopback, each with 20 ms G.711 media both
/// ways, for `seconds`; reports CPU time per call-second (both ends
/// together), resident memory per call, packets lost, and (`floor`) what
/// the same packets cost a plain socket loop.
pub async fn calls(
    n: usize,
    seconds: u64,
    floor: bool,
    srtp: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    use siproam::core::{CallEvent, CallState};
    use siproam::{AudioSpec, Phone, PhoneCommand, PhoneConfig};
    if n == 0 {
        bail!("--calls must be at least 1");
    }
    let phone = |auto_answer: bool| {
        Phone::new(
            PhoneConfig {
                auto_answer,
                play: AudioSpec::Tone(1000.0),
                record: None,
                media_ip: None,
                // the callee takes all N calls at once
                incoming: siproam::core::IncomingCallLimits {
                    max_unanswered: n,
                    max_calls: n,
                    ..Default::default()
                },
                srtp: if srtp {
                    siproam::core::sdp::SrtpPolicy::Mandatory
                } else {
                    siproam::core::sdp::SrtpPolicy::Off
                },
                ..Default::default()
            },
            42,
        )
    };
    let callee_cfg = EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.3:0".parse()?)],
        ..Default::default()
    };
    let mut callee = EndpointHandle::start(callee_cfg, Box::new(phone(true))).await?;
    let caller_cfg = EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.2:0".parse()?)],
        ..Default::default()
    };
    let mut caller = EndpointHandle::start(caller_cfg, Box::new(phone(false))).await?;
    let bob = callee
        .listeners()
        .await?
        .first()
        .map(|l| l.local)
        .context("callee listener")?;
    let uri = format!("sip:bob@{bob}");
    let mut ids = Vec::with_capacity(n);
    let rss0 = rss_bytes().unwrap_or(0);
    let setup = Instant::now();
    let mut confirmed = 0usize;
    let mut failed = 0usize;
    for _ in 0..n {
        ids.push(caller.call(&uri, "sip:alice@example.test", None).await?);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut progress = crate::progress::Progress::new("calls set up", n as u64);
    while confirmed + failed < n {
        progress.set((confirmed + failed) as u64);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            ev = caller.next_event() => match ev {
                Some(EndpointEvent::Core(Event::Call(CallEvent::State { state: CallState::Confirmed, .. }))) => confirmed += 1,
                Some(EndpointEvent::Core(Event::Call(CallEvent::State { state: CallState::Disconnected, .. }))) => failed += 1,
                Some(_) => {}
                None => bail!("the caller stopped"),
            },
            _ = callee.next_event() => {}
        }
    }
    progress.finish();
    let setup_s = setup.elapsed().as_secs_f64();
    // a second of media first: buffers filled, reports flowing
    let settle = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(settle) => break,
            _ = caller.next_event() => {}
            _ = callee.next_event() => {}
        }
    }
    let memory_per_call = rss_bytes().unwrap_or(0).saturating_sub(rss0) / n as u64;
    let cpu0 = cpu_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = caller.next_event() => {}
            _ = callee.next_event() => {}
        }
    }
    let cpu = cpu_seconds().unwrap_or(0.0) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    for id in &ids {
        let _ = caller.phone(PhoneCommand::HangUp(*id)).await;
    }
    // final media reports from both ends
    let (mut encrypted, mut srtp_dropped) = (0u64, 0u64);
    let (mut tx, mut rx, mut lost, mut reports) = (0u64, 0u64, 0i64, 0usize);
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while reports < 2 * confirmed {
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            ev = caller.next_event() => ev,
            ev = callee.next_event() => ev,
        };
        if let Some(EndpointEvent::Media(m)) = ev {
            if m.last {
                reports += 1;
                encrypted += u64::from(m.srtp.is_some());
                srtp_dropped += m.srtp_dropped;
                tx += m.tx_packets;
                rx += m.rx_packets;
                lost += m.lost.max(0);
            }
        }
    }
    let call_seconds = confirmed as f64 * wall;
    caller.shutdown().await;
    callee.shutdown().await;
    let floor = if floor {
        let (cpu, wall, lost) = tokio::task::spawn_blocking(move || floor_loop(n, seconds))
            .await
            .context("the floor loop")??;
        json!({
            "cpu_seconds": (cpu * 1000.0).round() / 1000.0,
            "core_percent_per_100_calls": (cpu / wall * 100.0 * 100.0 / n as f64 * 100.0).round() / 100.0,
            "packets_lost": lost,
        })
    } else {
        Value::Null
    };
    emit(
        json_out,
        json!({
            "event": "bench",
            "bench": "calls",
            "calls": n,
            "confirmed": confirmed,
            "failed": failed,
            "setup_seconds": (setup_s * 1000.0).round() / 1000.0,
            "seconds": (wall * 1000.0).round() / 1000.0,
            "cpu_seconds": (cpu * 1000.0).round() / 1000.0,
            "cpu_ms_per_call_second": if call_seconds > 0.0 { (cpu * 1000.0 / call_seconds * 1000.0).round() / 1000.0 } else { 0.0 },
            "core_percent_per_100_calls": if confirmed > 0 { (cpu / wall * 100.0 * 100.0 / confirmed as f64 * 100.0).round() / 100.0 } else { 0.0 },
            "packets_sent": tx,
            "packets_received": rx,
            "packets_lost": lost,
            "final_reports": reports,
            "srtp": srtp,
            "srtp_streams": encrypted,
            "srtp_dropped": srtp_dropped,
            "memory_per_call_bytes": memory_per_call,
            "floor": floor,
        }),
    );
    // every stream encrypted, and not one packet refused by SRTP: both
    // ends are ours, so a refusal is a bug (such as RTCP sent to a port
    // where another call's socket listens)
    let all_encrypted = !srtp || (encrypted == reports as u64 && srtp_dropped == 0);
    Ok(if confirmed == n && lost == 0 && all_encrypted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The floor of `bench calls`: `n` pairs of plain UDP sockets (127.0.0.2
/// and 127.0.0.3) exchanging 172-byte datagrams, 50 a second each way per
/// pair, one system call per datagram, for `seconds`, on one thread; no
/// SIP, no sessions. Returns its CPU seconds, wall seconds and the
/// datagrams that did not arrive.
fn floor_loop(n: usize, seconds: u64) -> anyhow::Result<(f64, f64, u64)> {
    use std::net::UdpSocket;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let a = UdpSocket::bind("127.0.0.2:0")?;
        let b = UdpSocket::bind("127.0.0.3:0")?;
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        let (aa, ba) = (a.local_addr()?, b.local_addr()?);
        pairs.push((a, aa, b, ba));
    }
    let packet = [0x80u8; 172];
    let mut buf = [0u8; 2048];
    let (mut sent, mut received) = (0u64, 0u64);
    let cpu0 = cpu_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    let mut tick = t0;
    let ptime = Duration::from_millis(20);
    while t0.elapsed() < Duration::from_secs(seconds) {
        for (a, aa, b, ba) in &pairs {
            sent += u64::from(a.send_to(&packet, *ba).is_ok());
            sent += u64::from(b.send_to(&packet, *aa).is_ok());
        }
        // on loopback each datagram is queued by the time send returns:
        // one receive each, no call that finds nothing
        for (a, _, b, _) in &pairs {
            received += u64::from(b.recv_from(&mut buf).is_ok());
            received += u64::from(a.recv_from(&mut buf).is_ok());
        }
        tick += ptime;
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
    }
    let cpu = cpu_seconds().unwrap_or(0.0) - cpu0;
    Ok((
        cpu,
        t0.elapsed().as_secs_f64(),
        sent.saturating_sub(received),
    ))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

/// Registers Alice and Bob (`sip:alice@`/`sip:bob@example.test`) at
/// `reg`, then Alice calls Bob through it; returns once the call is
/// confirmed.
pub(crate) async fn register_and_call(
    alice: &mut EndpointHandle,
    bob: &mut EndpointHandle,
    reg: &str,
) -> anyhow::Result<siproam::core::CallId> {
    for (ep, user) in [(&alice, "alice"), (&bob, "bob")] {
        ep.register(AccountSpec {
            aor: format!("sip:{user}@example.test"),
            registrar: reg.to_owned(),
            username: None,
            password: None,
            instance_id: Some(crate::run::instance_id(user.len() as u64)),
            outbound: false,
            reg_id: None,
            expires: 600,
            ipv6_sip: siproam::Ipv6Use::Enabled,
            ipv6_media: siproam::Ipv6Use::Enabled,
            ip_change: None,
            flow: Default::default(),
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    call_bob(alice, bob, reg).await
}

/// Alice calls Bob through `reg`; returns once the call is confirmed.
pub(crate) async fn call_bob(
    alice: &mut EndpointHandle,
    bob: &mut EndpointHandle,
    reg: &str,
) -> anyhow::Result<siproam::core::CallId> {
    use siproam::core::{CallEvent, CallState};
    let call = alice
        .call("sip:bob@example.test", "sip:alice@example.test", Some(reg))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => bail!("the call did not confirm"),
            ev = alice.next_event() => ev,
            _ = bob.next_event() => None,
        };
        if let Some(EndpointEvent::Core(Event::Call(CallEvent::State {
            state: CallState::Confirmed,
            ..
        }))) = ev
        {
            break;
        }
    }
    Ok(call)
}

/// One direction's timings of one hand-off, in ms from the change.
#[derive(Default)]
pub(crate) struct Times {
    pub detect: Vec<f64>,
    pub register: Vec<f64>,
    pub refresh: Vec<f64>,
    pub media: Vec<f64>,
    pub lost: u64,
    pub runs: usize,
}

/// Waits for one hand-off (told or detected) to `new_ip` and records its timings.
pub(crate) async fn measure(
    alice: &mut EndpointHandle,
    bob: &mut EndpointHandle,
    start: Instant,
    new_ip: &str,
    t: &mut Times,
) {
    t.runs += 1;
    let (mut d, mut r, mut f, mut m) = (None, None, None, None);
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while d.is_none() || r.is_none() || f.is_none() || m.is_none() {
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            ev = alice.next_event() => ev,
            _ = bob.next_event() => None,
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        match ev {
            Some(EndpointEvent::IpChange(c))
                if c.stage == siproam::IpChangeStage::Started && d.is_none() =>
            {
                d = Some(ms)
            }
            Some(EndpointEvent::Core(Event::Registration(x)))
                if x.state == RegistrationState::Registered
                    && x.contact.contains(new_ip)
                    && r.is_none() =>
            {
                r = Some(ms)
            }
            Some(EndpointEvent::Core(Event::Call(siproam::core::CallEvent::Answer { .. })))
                if d.is_some() && f.is_none() =>
            {
                f = Some(ms)
            }
            Some(EndpointEvent::MediaMoved { first_packet, .. }) if m.is_none() => {
                m = Some(first_packet.saturating_duration_since(start).as_secs_f64() * 1000.0);
            }
            _ => {}
        }
    }
    t.detect.extend(d);
    t.register.extend(r);
    t.refresh.extend(f);
    t.media.extend(m);
}

/// `siproam bench handoff --runs N`: the demo's hand-off, repeated on one
/// call (Alice alternates between 127.0.0.2 and 127.0.0.3); reports p50
/// and p95 from handling started to the REGISTER 2xx with the new Contact,
/// to the call refresh's 2xx, and to the first RTP from the peer on the new
/// address, and the RTP packets lost per hand-off.
pub async fn handoff(
    runs: usize,
    break_before_make: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    use siproam::core::Config;
    use siproam::edge::RegistrarApp;
    use siproam::{AudioSpec, Phone, PhoneCommand, PhoneConfig};
    use siproam_edge::Registrar;
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let reg_cfg = EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.1:0".parse()?)],
        core: Config {
            dialogs: false,
            ..Config::default()
        },
        ..Default::default()
    };
    let registrar = EndpointHandle::start(
        reg_cfg,
        Box::new(RegistrarApp::new(Registrar::new(
            crate::run::registrar_config()?,
        ))),
    )
    .await?;
    let reg = format!(
        "sip:{}",
        registrar
            .listeners()
            .await?
            .first()
            .map(|l| l.local)
            .context("registrar")?
    );
    let phone = |auto| {
        Box::new(Phone::new(
            PhoneConfig {
                auto_answer: auto,
                play: AudioSpec::Tone(1000.0),
                record: None,
                media_ip: None,
                old_media_grace: if break_before_make && !auto {
                    Duration::ZERO
                } else {
                    PhoneConfig::default().old_media_grace
                },
                ipv6_media: siproam::Ipv6Use::Enabled,
                ..Default::default()
            },
            5,
        ))
    };
    let mut alice = EndpointHandle::start(
        EndpointConfig {
            listen: vec![(Transport::Udp, "127.0.0.2:0".parse()?)],
            ..Default::default()
        },
        phone(false),
    )
    .await?;
    let mut bob = EndpointHandle::start(
        EndpointConfig {
            listen: vec![(Transport::Udp, "127.0.0.5:0".parse()?)],
            ..Default::default()
        },
        phone(true),
    )
    .await?;
    let call = register_and_call(&mut alice, &mut bob, &reg).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut times = Times::default();
    let mut progress = crate::progress::Progress::new("hand-offs", runs as u64);
    for run in 0..runs {
        progress.set(run as u64);
        let ip: std::net::IpAddr = if run % 2 == 0 {
            "127.0.0.3".parse()?
        } else {
            "127.0.0.2".parse()?
        };
        let start = Instant::now();
        alice.ip_change(ip).await?;
        measure(&mut alice, &mut bob, start, &ip.to_string(), &mut times).await;
        // let the media settle between hand-offs
        let settle = tokio::time::Instant::now() + Duration::from_millis(300);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(settle) => break,
                _ = alice.next_event() => {}
                _ = bob.next_event() => {}
            }
        }
    }
    alice.phone(PhoneCommand::HangUp(call)).await?;
    let (mut lost_alice, mut lost_bob) = (None, None);
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    progress.finish();
    while lost_alice.is_none() || lost_bob.is_none() {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            ev = alice.next_event() => if let Some(EndpointEvent::Media(m)) = ev { if m.last { lost_alice = Some(m.lost.max(0)) } },
            ev = bob.next_event() => if let Some(EndpointEvent::Media(m)) = ev { if m.last { lost_bob = Some(m.lost.max(0)) } },
        }
    }
    for v in [&mut times.register, &mut times.refresh, &mut times.media] {
        v.sort_by(f64::total_cmp);
    }
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let stat = |v: &Vec<f64>| json!({"p50": r3(percentile(v, 0.5)), "p95": r3(percentile(v, 0.95)), "n": v.len()});
    let lost = lost_alice.unwrap_or(-1) + lost_bob.unwrap_or(-1);
    emit(
        json_out,
        json!({
            "event": "bench",
            "bench": "handoff",
            "runs": runs,
            "register_2xx_ms": stat(&times.register),
            "refresh_2xx_ms": stat(&times.refresh),
            "media_resumed_ms": stat(&times.media),
            "rtp_lost_total": lost,
            "rtp_lost_per_handoff": if lost >= 0 { r3(lost as f64 / runs as f64) } else { f64::NAN },
            "mode": if break_before_make {
                "break-before-make (the old media socket closes at the move)"
            } else {
                "make-before-break (both addresses usable)"
            },
        }),
    );
    for ep in [&alice, &bob, &registrar] {
        ep.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}
