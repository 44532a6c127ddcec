//! The `siproam` command line (its JSON events in `docs/events.md`):
//! the only crate with clap and anyhow.

mod agent_state;
mod bench;
mod bench_attack;
mod bench_edge;
mod bench_keepalive;
mod bench_netns;
mod bench_soak;
mod demo;
mod edge_cmd;
mod errors;
mod msgcheck;
mod progress;
mod run;
mod svg;
mod timeline;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "siproam",
    version,
    about = "A SIP user agent whose calls survive network changes"
)]
struct Cli {
    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// A TOML file with the same settings as the flags (flags win), plus
    /// `[[account]]`, `[call]`, `[registrar]` and `[edge]` tables (README).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More logging on stderr (-v, -vv, -vvv) from siproam's own crates
    /// (others only warn); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print every SIP message sent and received on stderr (time,
    /// direction, transport, addresses, the message).
    #[arg(long, global = true)]
    trace: bool,
    /// Write the SIP (UDP, TCP, TLS as plaintext) and RTP sent and
    /// received to this pcap file (for Wireshark, sngrep).
    #[arg(long, global = true, value_name = "FILE")]
    pcap: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with single SIP messages.
    Msg {
        #[command(subcommand)]
        action: MsgAction,
    },
    /// Registrar, two agents, a call and an IP change on loopback, with a timeline.
    Demo {
        /// Also draw the hand-off as a ladder diagram in this SVG file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Draw a hand-off ladder diagram from an agent's (or the demo's)
    /// `--json` log, one event per line.
    Timeline {
        /// The log (`-` for stdin).
        log: String,
        /// The SVG file to write.
        #[arg(long, value_name = "FILE")]
        svg: PathBuf,
    },
    /// A registrar and location service (in memory, or shared in Redis).
    Registrar {
        /// Where to listen (`PROTO:HOST:PORT`, repeatable); default udp:127.0.0.1:5060.
        #[arg(long)]
        listen: Vec<String>,
        /// A file of `user:password` lines: REGISTERs are digest-challenged.
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
        /// The domain served (others get 404).
        #[arg(long)]
        domain: Option<String>,
        /// New requests per second one source address may send (bursts of
        /// twice that); beyond, UDP requests are dropped and stream
        /// requests answered 503. 0 turns the limit off (behind one
        /// trusted proxy, or for a benchmark; default 200).
        #[arg(long, value_name = "N")]
        max_rate_per_source: Option<u32>,
        /// Most bindings one AoR may hold (and Contacts one REGISTER may
        /// carry); beyond it 403 (default 16).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_bindings: Option<u32>,
        /// Shortest binding lifetime accepted, in seconds; a shorter one
        /// gets 423 Interval Too Brief (default 60).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
        min_expires: Option<u32>,
        /// Most TCP/TLS connections open at once (default 1024); beyond
        /// it an idle incoming connection that never carried a message
        /// makes room, else the new one is closed.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: Option<u32>,
        /// The kernel's TCP keep-alive on every accepted TCP/TLS
        /// connection: seconds idle before the first probe, seconds
        /// between probes, probes unanswered before the connection is
        /// dropped (e.g. 60,10,5; default off).
        #[arg(long, value_name = "IDLE,INTERVAL,COUNT")]
        tcp_keepalive: Option<siproam::transport::TcpKeepalive>,
        /// Flow-Timer (seconds) in the 2xx of REGISTERs with outbound in
        /// force (RFC 5626 §5.4): how often the client must send a
        /// keep-alive.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
        flow_timer: Option<u32>,
        #[command(flatten)]
        tls: run::TlsArgs,
        #[command(flatten)]
        store: run::StoreArgs,
    },
    /// An RFC 5626 edge proxy in front of a registrar: Path and
    /// Record-Route with signed flow tokens, 430 on a dead flow, CRLF pong
    /// and STUN on its ports, flow clean-up.
    Edge {
        #[command(flatten)]
        args: edge_cmd::EdgeArgs,
    },
    /// A long-running user agent: registers, places and answers calls.
    #[command(after_help = run::AGENT_COMMANDS_HELP)]
    Agent {
        #[command(flatten)]
        agent: run::AgentArgs,
        #[command(flatten)]
        calls: run::CallArgs,
    },
    /// One call, then exit when it ends (1 if it failed).
    Call {
        /// Whom to call (`sip:bob@example.test`).
        uri: String,
        #[command(flatten)]
        agent: run::AgentArgs,
        #[command(flatten)]
        calls: run::CallArgs,
    },
    /// Whole-system benchmarks.
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// N accounts on one endpoint registering to a registrar on loopback.
    Register {
        /// How many accounts.
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// udp or tcp.
        #[arg(long, default_value = "udp")]
        transport: String,
        /// Digest-authenticate every account (a users file of N users).
        #[arg(long)]
        auth: bool,
        /// Registrations in flight at once.
        #[arg(long, default_value_t = 256)]
        window: usize,
    },
    /// The demo's hand-off repeated on one call: stage latencies and RTP loss.
    Handoff {
        /// How many hand-offs.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Close the old media socket at once on each move (the old
        /// interface is gone), instead of keeping it until the peer follows.
        #[arg(long)]
        break_before_make: bool,
        /// In network namespaces (root): the address really removed and put
        /// back, the change detected by the endpoint itself; reports
        /// detection too, for break-before-make and make-before-break.
        #[arg(long)]
        netns: bool,
    },
    /// A server under hostile traffic on loopback: a legitimate client's
    /// latency during and after a flood from another source, the server's
    /// memory and descriptors, and a new TCP client among idle connections.
    Attack {
        /// `registrar` (REGISTER flood, digest users), `agent` (OPTIONS
        /// flood) or `edge` (`siproam edge` in front of a registrar, both
        /// children: REGISTER flood at the edge).
        #[arg(long, default_value = "registrar")]
        target: String,
        /// How long the flood lasts, in seconds.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Flood rate cap in requests per second (0: as fast as one thread can).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// How long the legitimate client goes on after the flood, in seconds.
        #[arg(long, default_value_t = 60)]
        after: u64,
        /// Idle TCP connections to open before a new TCP client registers
        /// (registrar and edge; 0 skips).
        #[arg(long, default_value_t = 20_000)]
        tcp_idle: usize,
    },
    /// `siproam registrar` against Kamailio 5.6 set up the same way
    /// (interop/kamailio/bench.cfg), one generator: UDP REGISTER/s without
    /// and with digest, memory per binding, TCP flows held with keep-alives
    /// (memory per flow, pong p50/p99).
    Edge {
        /// AoRs registered (memory per binding is taken at this many).
        #[arg(long, default_value_t = 50_000)]
        bindings: usize,
        /// Seconds of each REGISTER/s run and of the keep-alive run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// TCP flows held (0 skips that part).
        #[arg(long, default_value_t = 20_000)]
        flows: usize,
        /// Seconds between pings on each flow.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Source addresses the UDP load comes from (127.3.x.y).
        #[arg(long, default_value_t = 128)]
        sources: usize,
        /// REGISTERs in flight at once, over all sources.
        #[arg(long, default_value_t = 128)]
        window: usize,
        /// Leave Kamailio out (not installed).
        #[arg(long)]
        no_kamailio: bool,
        /// Also the UDP REGISTER/s through `siproam edge` in front of the
        /// registrar.
        #[arg(long)]
        edge: bool,
        /// Also the UDP REGISTER/s with `--store redis://` (starts its own
        /// redis-server on loopback).
        #[arg(long)]
        redis: bool,
    },
    /// Keep-alives on outbound flows: N accounts, each with its own TCP
    /// flow to a registrar on loopback, pinging for a while (CPU, memory
    /// per account). With --netns (root): how long a
    /// silently dropped TCP flow takes to be found dead and replaced (from
    /// the first unanswered ping to the `flow failed` event and the next
    /// REGISTER 2xx).
    Keepalive {
        /// Accounts, each with its own outbound TCP flow (without --netns).
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// How long keep-alives run once all are registered, in seconds
        /// (without --netns).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// In network namespaces: the flow-failure timing.
        #[arg(long)]
        netns: bool,
        /// How many flow failures (--netns).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Keep-alive interval in seconds (pings at 80-100 % of it).
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Pong timeout in seconds.
        #[arg(long, default_value_t = 10)]
        pong_timeout: u64,
        /// Instead of siproam's endpoint, plain non-blocking sockets on
        /// one thread send the same pings and read the pongs: the cost the
        /// kernel alone puts on this workload (without --netns).
        #[arg(long)]
        floor: bool,
    },
    /// Holds idle TCP connections for `bench attack` (run by it).
    #[command(hide = true)]
    HoldIdle {
        /// Where to connect.
        #[arg(long)]
        to: std::net::SocketAddr,
        /// How many connections.
        #[arg(long)]
        count: usize,
        /// The index of the first (picks the source addresses).
        #[arg(long, default_value_t = 0)]
        first: usize,
    },
    /// In network namespaces (root): N detected hand-offs in a row with a
    /// call up, alternating break-before-make and make-before-break;
    /// reports calls and bindings lost, RTP loss per hand-off, descriptors
    /// and resident memory (exit 1 when a call or binding was lost).
    Soak {
        /// How many hand-offs.
        #[arg(long, default_value_t = 1000)]
        handoffs: usize,
        /// Stop after this many seconds even if not all hand-offs ran.
        #[arg(long, default_value_t = 7200)]
        max_secs: u64,
    },
    /// N simultaneous calls with G.711 media between two endpoints on loopback.
    Calls {
        /// How many calls.
        #[arg(long, default_value_t = 100)]
        calls: usize,
        /// How long the media runs, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Media engine threads carrying the calls (0: one per core).
        #[arg(long, default_value_t = 0)]
        media_threads: usize,
        /// Skip the floor measurement (a plain socket loop with the same
        /// packets, run after the calls).
        #[arg(long)]
        no_floor: bool,
        /// Every call with SRTP (AES_CM_128_HMAC_SHA1_80 by SDES).
        #[arg(long)]
        srtp: bool,
    },
}

#[derive(Debug, Subcommand)]
enum MsgAction {
    /// Parse one SIP message (a file, or `-` / nothing for stdin) and say
    /// whether the stack would accept it, or what it would answer.
    Check {
        /// The message file; `-` or absent reads stdin.
        file: Option<String>,
    },
}

fn main() -> ExitCode {
    run::mark_start();
    let mut cli = Cli::parse();
    let file = match cli.config.as_deref().map(run::FileConfig::load).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return bad_usage(&e),
    };
    file.globals(&mut cli.verbose, &mut cli.trace, &mut cli.pcap);
    init_logging(cli.verbose);
    if cli.trace || cli.pcap.is_some() {
        let options = siproam::wiretap::WireTapOptions {
            trace: cli.trace,
            pcap: cli.pcap.clone(),
            pcap_limit: None,
        };
        match siproam::wiretap::WireTap::start(options) {
            Ok(tap) => {
                siproam::wiretap::install(tap);
            }
            Err(e) => return bad_usage(&e.into()),
        }
    }
    let code = run_command(cli, &file);
    // the pcap file written out and flushed, whatever the command's end
    siproam::wiretap::finish_global();
    code
}

fn run_command(cli: Cli, file: &run::FileConfig) -> ExitCode {
    raise_descriptor_limit();
    let json = file.json(cli.json);
    let result = match cli.command {
        Command::Msg {
            action: MsgAction::Check { file },
        } => read_input(file.as_deref()).and_then(|d| msgcheck::run(&d, json)),
        Command::Demo { svg } => block_on(demo::run(json, svg)),
        Command::Timeline { log, svg } => timeline::command(&log, &svg, json),
        Command::Registrar {
            mut listen,
            mut users,
            mut domain,
            mut max_rate_per_source,
            mut max_bindings,
            mut min_expires,
            mut max_connections,
            mut tcp_keepalive,
            mut flow_timer,
            mut tls,
            mut store,
        } => {
            let file = file.for_registrar();
            file.store(&mut store);
            if let Err(e) = file
                .registrar(
                    &mut listen,
                    &mut users,
                    &mut domain,
                    &mut max_bindings,
                    &mut min_expires,
                    &mut tls,
                )
                .and_then(|()| file.tcp_keepalive(&mut tcp_keepalive))
                .and_then(|()| file.flow_timer(&mut flow_timer))
                .and_then(|()| {
                    file.registrar_limits(&mut max_connections, &mut max_rate_per_source)
                })
                .and_then(|()| errors::check_listen(&listen))
            {
                return bad_usage(&e);
            }
            block_on_server(run::registrar(
                listen,
                users,
                domain,
                max_rate_per_source.unwrap_or(200),
                run::BindingLimits {
                    max_bindings,
                    min_expires,
                    max_connections,
                },
                run::RegistrarTransport {
                    tls,
                    tcp_keepalive,
                    flow_timer,
                },
                store,
                json,
            ))
        }
        Command::Edge { mut args } => {
            if let Err(e) = file
                .for_edge()
                .edge(&mut args)
                .and_then(|()| args.check())
                .and_then(|()| errors::check_listen(&args.listen))
            {
                return bad_usage(&e);
            }
            let key = match edge_cmd::flow_key(args.flow_key_file.as_deref()) {
                Ok(k) => k,
                Err(e) => return bad_usage(&e),
            };
            block_on_server(async move {
                match edge_cmd::registrar_target(args.registrar.as_deref()).await {
                    Ok(target) => edge_cmd::edge(args, target, key, json).await,
                    Err(e) => {
                        eprintln!("error: {}", errors::report(&e));
                        Ok(ExitCode::from(2))
                    }
                }
            })
        }
        Command::Agent {
            agent: mut args,
            mut calls,
        } => match file
            .agent(&mut args)
            .map(|()| file.calls(&mut calls))
            .and_then(|()| errors::check_agent(&args, &calls, None))
        {
            Ok(()) => block_on(run::agent(args, calls, json, None)),
            Err(e) => return bad_usage(&e),
        },
        Command::Call {
            uri,
            agent: mut args,
            mut calls,
        } => match file
            .agent(&mut args)
            .map(|()| file.calls(&mut calls))
            .and_then(|()| errors::check_agent(&args, &calls, Some(&uri)))
        {
            Ok(()) => block_on(run::agent(args, calls, json, Some(uri))),
            Err(e) => return bad_usage(&e),
        },
        Command::Bench {
            which:
                BenchKind::Register {
                    accounts,
                    transport,
                    auth,
                    window,
                },
        } => block_on(bench::register(
            accounts,
            &transport,
            auth,
            window.max(1),
            json,
        )),
        Command::Bench {
            which:
                BenchKind::Attack {
                    target,
                    secs,
                    rate,
                    after,
                    tcp_idle,
                },
        } => block_on(bench_attack::attack(
            bench_attack::AttackArgs {
                target,
                secs,
                rate,
                after,
                tcp_idle,
            },
            json,
        )),
        Command::Bench {
            which: BenchKind::HoldIdle { to, count, first },
        } => bench_attack::hold_idle(to, count, first),
        Command::Bench {
            which:
                BenchKind::Keepalive {
                    netns: true,
                    runs,
                    interval,
                    pong_timeout,
                    ..
                },
        } => block_on(bench_keepalive::netns(runs, interval, pong_timeout, json)),
        Command::Bench {
            which:
                BenchKind::Keepalive {
                    netns: false,
                    accounts,
                    seconds,
                    interval,
                    floor,
                    ..
                },
        } => block_on(bench_keepalive::accounts(
            accounts, interval, seconds, floor, json,
        )),
        Command::Bench {
            which:
                BenchKind::Edge {
                    bindings,
                    seconds,
                    flows,
                    interval,
                    sources,
                    window,
                    no_kamailio,
                    edge,
                    redis,
                },
        } => block_on(bench_edge::edge(
            bench_edge::EdgeBench {
                bindings,
                seconds,
                flows,
                interval,
                sources,
                window,
                kamailio: !no_kamailio,
                edge,
                redis,
            },
            json,
        )),
        Command::Bench {
            which: BenchKind::Soak { handoffs, max_secs },
        } => block_on(bench_soak::soak(handoffs, max_secs, json)),
        Command::Bench {
            which:
                BenchKind::Calls {
                    calls,
                    seconds,
                    media_threads,
                    no_floor,
                    srtp,
                },
        } => {
            siproam::set_media_threads(media_threads);
            block_on(bench::calls(calls, seconds, !no_floor, srtp, json))
        }
        Command::Bench {
            which:
                BenchKind::Handoff {
                    runs,
                    break_before_make,
                    netns,
                },
        } => {
            if netns {
                block_on(bench_netns::handoff_netns(runs, json))
            } else {
                block_on(bench::handoff(runs, break_before_make, json))
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", errors::report(&e));
            ExitCode::from(1)
        }
    }
}

/// A bad setting in the `--config` file or a bad flag value: exit 2 (bad
/// usage), before anything starts.
fn bad_usage(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", errors::report(e));
    ExitCode::from(2)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// A server's runtime (`registrar`, `edge`): one thread. Their SIP work
/// is one task (the endpoint's driver) whichever runtime runs it; with
/// worker threads beside it, every datagram and every connection's read
/// crosses threads to reach it, and the wake-ups cost more than the work
/// they move (`bench edge` on 2 cores: about 40 µs of CPU per REGISTER
/// against 27 µs here, and pong p99 2.2 ms against 0.7 ms at 10,000
/// flows). A fleet scales out by processes sharing a `--store`.
fn server_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// [`block_on`] on a [`server_runtime`].
fn block_on_server<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    fut: F,
) -> anyhow::Result<ExitCode> {
    let rt = server_runtime()?;
    let result = rt.block_on(fut);
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// Runs a command on a fresh runtime and shuts it down without waiting for
/// the thread blocked reading stdin (which would keep a finished
/// `siproam call` alive until its stdin closed).
fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    fut: F,
) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let result = rt.block_on(fut);
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// Lets the process hold as many sockets as the system allows (the soft
/// descriptor limit up to the hard one): a server's connection limits, not
/// the descriptor limit, must decide what is refused.
fn raise_descriptor_limit() {
    match siproam::raise_open_files_limit() {
        Ok(l) if l.soft > l.before => {
            tracing::debug!(before = l.before, now = l.soft, "descriptor limit raised");
        }
        Ok(_) => {}
        Err(e) => tracing::info!("cannot raise the descriptor limit: {e}"),
    }
}

/// The siproam crates (the library's, the command's) whose logs `-v`
/// turns up; every other crate (netlink, rustls, hickory, tokio …) stays
/// at `warn` unless `RUST_LOG` says otherwise.
const OWN_CRATES: &[&str] = &[
    "siproam",
    "siproam_cli",
    "siproam_core",
    "siproam_edge",
    "siproam_media",
    "siproam_sip",
];

/// The default log filter at a `-v` count.
fn default_filter(verbose: u8) -> String {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut filter = String::from("warn");
    for krate in OWN_CRATES {
        filter.push_str(&format!(",{krate}={level}"));
    }
    filter
}

fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter(verbose)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // colour codes only for a person at a terminal, never in a file
        // or a pipe
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn read_input(file: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    match file {
        None | Some("-") => {
            std::io::stdin()
                .read_to_end(&mut data)
                .context("reading stdin")?;
        }
        Some(path) => {
            data = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// Whether a line of `target` at `level` passes the default filter at
    /// `verbose`.
    fn passes(verbose: u8, target_is_ours: bool, level: Level) -> bool {
        let filter = tracing_subscriber::EnvFilter::new(default_filter(verbose));
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            // `enabled!` needs its target as a constant
            match (target_is_ours, level) {
                (true, Level::TRACE) => {
                    tracing::enabled!(target: "siproam::transport", Level::TRACE)
                }
                (true, Level::DEBUG) => tracing::enabled!(target: "siproam_core::x", Level::DEBUG),
                (true, Level::INFO) => tracing::enabled!(target: "siproam::endpoint", Level::INFO),
                (true, _) => tracing::enabled!(target: "siproam_cli", Level::WARN),
                (false, Level::TRACE) => {
                    tracing::enabled!(target: "netlink_proto::connection", Level::TRACE)
                }
                (false, Level::DEBUG) => tracing::enabled!(target: "rustls::client", Level::DEBUG),
                (false, Level::INFO) => tracing::enabled!(target: "hickory_resolver", Level::INFO),
                (false, _) => tracing::enabled!(target: "tokio", Level::WARN),
            }
        })
    }

    #[test]
    fn verbosity_turns_up_siproam_and_leaves_other_crates_at_warn() {
        for verbose in 0..=3 {
            // other crates: warnings only, whatever the verbosity
            assert!(passes(verbose, false, Level::WARN));
            assert!(!passes(verbose, false, Level::INFO), "-v x{verbose}");
            assert!(!passes(verbose, false, Level::DEBUG), "-v x{verbose}");
            assert!(!passes(verbose, false, Level::TRACE), "-v x{verbose}");
            assert!(passes(verbose, true, Level::WARN));
        }
        assert!(!passes(0, true, Level::INFO));
        assert!(passes(1, true, Level::INFO));
        assert!(!passes(1, true, Level::DEBUG));
        assert!(passes(2, true, Level::DEBUG));
        assert!(!passes(2, true, Level::TRACE));
        assert!(passes(3, true, Level::TRACE));
    }
}
