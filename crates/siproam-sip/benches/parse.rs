//! Parser benchmark: siproam-sip against rsipstack, rsip and ezk-sip-types.
//!
//! `cargo bench -p siproam-sip` runs the full measurement (well under a minute);
//! `SIPROAM_BENCH_QUICK=1 cargo bench -p siproam-sip` runs a short, noisier one.
//! When the arguments do not contain `--bench` (e.g. `cargo test --benches`) every
//! code path runs once as a smoke test and the process exits 0.
//!
//! Timed unit (per message, per parser): parse the whole message from a `bytes::Bytes`,
//! then read Call-ID, CSeq (number and method) and the top Via's branch, and
//! `black_box` them. The "mix" row parses the six messages round-robin.
//! A counting global allocator reports heap allocations per parse and per parse+read.
//! siproam's printer (`Message::to_bytes`) is timed too, on each message as parsed and after a
//! top-Via `received` edit (an unedited message hands back its input buffer without copying).
//! Inputs live in `benches/messages/*.sip` (CRLF, checked at startup along with Content-Length).

// The counting `#[global_allocator]` below has to `unsafe impl GlobalAlloc`; the workspace
// denies `unsafe_code`, so it is allowed for this bench binary only.
#![allow(unsafe_code)]
// Bench harness: a broken fixture or parser should abort loudly, and the fixed-size
// tables are indexed directly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Display;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;

// ---------------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------------

/// Wraps the system allocator; counts allocation calls (alloc, alloc_zeroed, realloc) and the
/// bytes requested while `COUNTING` is set. Counting is off during the timed runs, so those
/// pay only one relaxed load per allocation.
#[derive(Debug)]
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
fn note_alloc(size: usize) {
    if COUNTING.load(Relaxed) {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is upheld exactly as `System` upholds it.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this wrapper with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        // SAFETY: `ptr` was allocated by `System` through this wrapper with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Average (allocation calls, bytes requested) per call of `f` over `iters` calls.
fn count_allocs(iters: u32, mut f: impl FnMut()) -> (f64, f64) {
    f(); // first call outside the window: lazy statics, thread-locals and the like
    ALLOCS.store(0, Relaxed);
    ALLOC_BYTES.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    for _ in 0..iters {
        f();
    }
    COUNTING.store(false, Relaxed);
    let n = f64::from(iters);
    (
        ALLOCS.load(Relaxed) as f64 / n,
        ALLOC_BYTES.load(Relaxed) as f64 / n,
    )
}

// ---------------------------------------------------------------------------------------------
// Message set
// ---------------------------------------------------------------------------------------------

/// One benchmark input plus the values every parser must read back from it.
#[derive(Debug)]
struct Fixture {
    name: &'static str,
    raw: &'static [u8],
    call_id: &'static str,
    seq: u32,
    method: &'static str,
    branch: &'static str,
}

const FIXTURES: [Fixture; 6] = [
    Fixture {
        name: "REGISTER (digest auth)",
        raw: include_bytes!("messages/register.sip"),
        call_id: "ZDk5NzE3NmRmNWQ0NzI2YzY3YjdhMTM5ZjY1ZWQ0ZTA.",
        seq: 2,
        method: "REGISTER",
        branch: "z9hG4bK-524287-1---7f3e91c5a2b4d806",
    },
    Fixture {
        name: "INVITE (SDP)",
        raw: include_bytes!("messages/invite.sip"),
        call_id: "3848276298220188511@atlanta.example.com",
        seq: 314159,
        method: "INVITE",
        branch: "z9hG4bK74bf9a1c3e",
    },
    Fixture {
        name: "200 OK (6 Via, 4 RR)",
        raw: include_bytes!("messages/ok.sip"),
        call_id: "3848276298220188511@atlanta.example.com",
        seq: 314159,
        method: "INVITE",
        branch: "z9hG4bK2d4790.a1c1",
    },
    Fixture {
        name: "NOTIFY (dialog)",
        raw: include_bytes!("messages/notify.sip"),
        call_id: "5c7f3a1e0d9b2c4a6e8f@192.0.2.55",
        seq: 104,
        method: "NOTIFY",
        branch: "z9hG4bK3b1c5d7e.0",
    },
    Fixture {
        name: "180 Ringing",
        raw: include_bytes!("messages/ringing.sip"),
        call_id: "3848276298220188511@atlanta.example.com",
        seq: 314159,
        method: "INVITE",
        branch: "z9hG4bK77ef4c2312983.1",
    },
    Fixture {
        name: "BYE (in-dialog, Route)",
        raw: include_bytes!("messages/bye.sip"),
        call_id: "3848276298220188511@atlanta.example.com",
        seq: 314160,
        method: "BYE",
        branch: "z9hG4bK-d8754z-5c1f7a3b0e9d2c46",
    },
];

/// Checks CRLF line endings and that Content-Length matches the body byte for byte.
fn check_fixture(fx: &Fixture) {
    let raw = fx.raw;
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' {
            assert!(
                i > 0 && raw[i - 1] == b'\r',
                "{}: bare LF at byte {i} (the .sip files must keep CRLF line endings)",
                fx.name
            );
        }
    }
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{}: no CRLFCRLF after the header section", fx.name))
        + 4;
    let head = std::str::from_utf8(&raw[..head_end]).expect("header section is UTF-8");
    let declared: usize = head
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                .then(|| value.trim().parse().expect("numeric Content-Length"))
        })
        .unwrap_or_else(|| panic!("{}: no Content-Length", fx.name));
    let body_len = raw.len() - head_end;
    assert_eq!(
        declared, body_len,
        "{}: Content-Length {declared} but the body is {body_len} bytes",
        fx.name
    );
}

/// What a parser read back from a message, owned, for checking against the fixture.
#[derive(Debug, PartialEq, Eq)]
struct Extracted {
    call_id: String,
    seq: u32,
    method: String,
    branch: Option<String>,
}

impl Extracted {
    fn of(call_id: &str, seq: u32, method: &dyn Display, branch: Option<&str>) -> Self {
        Extracted {
            call_id: call_id.to_owned(),
            seq,
            method: method.to_string(),
            branch: branch.map(str::to_owned),
        }
    }

    fn expected(fx: &Fixture) -> Self {
        Extracted {
            call_id: fx.call_id.to_owned(),
            seq: fx.seq,
            method: fx.method.to_owned(),
            branch: Some(fx.branch.to_owned()),
        }
    }
}

/// Hands the four read values to the timed loop's optimisation barrier.
#[inline(always)]
fn sink(call_id: &str, seq: u32, method: &dyn Display, branch: Option<&str>) {
    black_box((call_id, seq, method, branch));
}

// ---------------------------------------------------------------------------------------------
// The parsers under test. Each offers `parse` (whole message from `Bytes`) and `read`
// (parse, then Call-ID, CSeq number + method, top Via branch, handed to a callback).
// ---------------------------------------------------------------------------------------------

type ReadFn<R> = fn(&str, u32, &dyn Display, Option<&str>) -> R;

mod siproam {
    use super::{Bytes, ReadFn};
    use siproam_sip::Message;

    pub fn parse(b: &Bytes) -> Result<Message, String> {
        Message::parse(b.clone()).map_err(|e| e.to_string())
    }

    pub fn read<R>(b: &Bytes, f: ReadFn<R>) -> Result<R, String> {
        let msg = parse(b)?;
        let cseq = msg.cseq();
        let via = msg.top_via().map_err(|e| e.to_string())?;
        Ok(f(msg.call_id(), cseq.seq, &cseq.method, via.branch()))
    }
}

/// rsipstack's own parser (`rsipstack::sip`, its in-tree successor of rsip):
/// `SipMessage::try_from(Bytes)` -> `parser::parse_message`.
mod rsipstack_sip {
    use super::{Bytes, ReadFn};
    use rsipstack::sip::prelude::*; // HeadersExt, UntypedHeader, ToTypedHeader
    use rsipstack::sip::SipMessage;

    pub fn parse(b: &Bytes) -> Result<SipMessage, String> {
        SipMessage::try_from(b.clone()).map_err(|e| e.to_string())
    }

    pub fn read<R>(b: &Bytes, f: ReadFn<R>) -> Result<R, String> {
        let msg = parse(b)?;
        let call_id = msg.call_id_header().map_err(|e| e.to_string())?;
        let cseq = msg
            .cseq_header()
            .and_then(|h| h.typed())
            .map_err(|e| e.to_string())?;
        let via = msg
            .top_via_header()
            .and_then(|h| h.typed())
            .map_err(|e| e.to_string())?;
        Ok(f(
            call_id.value(),
            cseq.seq,
            &cseq.method,
            via.branch().map(|b| b.value()),
        ))
    }
}

/// rsip: `SipMessage::try_from(Bytes)` (nom tokenizer, then untyped headers).
mod rsip_crate {
    use super::{Bytes, ReadFn};
    use rsip::prelude::*; // HeadersExt, UntypedHeader, ToTypedHeader
    use rsip::SipMessage;

    pub fn parse(b: &Bytes) -> Result<SipMessage, String> {
        SipMessage::try_from(b.clone()).map_err(|e| e.to_string())
    }

    pub fn read<R>(b: &Bytes, f: ReadFn<R>) -> Result<R, String> {
        let msg = parse(b)?;
        let call_id = msg.call_id_header().map_err(|e| e.to_string())?;
        let cseq = msg
            .cseq_header()
            .and_then(|h| h.typed())
            .map_err(|e| e.to_string())?;
        let via = msg
            .via_header()
            .and_then(|h| h.typed())
            .map_err(|e| e.to_string())?;
        Ok(f(
            call_id.value(),
            cseq.seq,
            &cseq.method,
            via.branch().map(|b| b.value()),
        ))
    }
}

/// ezk-sip-types has no single "parse a message" call: the message is assembled the way
/// ezk-sip-core's transport does it (`PullParser` over the lines, `MessageLine` for the
/// start line, `Line` + `Headers::insert` per header, body sliced by Content-Length).
/// Headers stay raw until asked for; `get_named::<T>()` parses them on access.
mod ezk {
    use super::{Bytes, ReadFn};
    use ezk_sip_types::header::typed::{CSeq, CallID, ContentLength, Via};
    use ezk_sip_types::msg::{Line, MessageLine, PullParser};
    use ezk_sip_types::parse::Parse;
    use ezk_sip_types::Headers;

    /// The parsed message; `line` and `body` are built (that is part of parsing) but this
    /// bench only reads headers.
    #[derive(Debug)]
    #[allow(dead_code)]
    pub struct Message {
        pub line: MessageLine,
        pub headers: Headers,
        pub body: Bytes,
    }

    pub fn parse(buffer: &Bytes) -> Result<Message, String> {
        let mut parser = PullParser::new(buffer, 0);
        let mut message_line = None;
        let mut headers = Headers::new();
        for item in &mut parser {
            let line = item.map_err(|_| "incomplete message".to_owned())?;
            let line = std::str::from_utf8(line).map_err(|e| e.to_string())?;
            if message_line.is_none() {
                let (_, l) = MessageLine::parse(buffer)(line)
                    .map_err(|e| format!("bad start line: {e:?}"))?;
                message_line = Some(l);
            } else {
                let (_, l) = Line::parse(buffer, line).map_err(|e| format!("bad header: {e:?}"))?;
                headers.insert(l.name, l.value);
            }
        }
        let head_end = parser.head_end();
        let body = match headers.get_named::<ContentLength>() {
            Ok(len) if len.0 == 0 => Bytes::new(),
            Ok(len) if buffer.len() >= head_end + len.0 => buffer.slice(head_end..head_end + len.0),
            Ok(_) => return Err("incomplete body".to_owned()),
            Err(_) => buffer.slice(head_end..),
        };
        Ok(Message {
            line: message_line.ok_or("empty message")?,
            headers,
            body,
        })
    }

    pub fn read<R>(b: &Bytes, f: ReadFn<R>) -> Result<R, String> {
        let msg = parse(b)?;
        let call_id: CallID = msg.headers.get_named().map_err(|e| e.to_string())?;
        let cseq: CSeq = msg.headers.get_named().map_err(|e| e.to_string())?;
        let via: Via = msg.headers.get_named().map_err(|e| e.to_string())?;
        Ok(f(
            call_id.0.as_str(),
            cseq.cseq,
            &cseq.method,
            via.params.get_val("branch").map(|b| b.as_str()),
        ))
    }
}

/// A parser under test, as plain function pointers so every contender goes through the same
/// (non-inlined) call in the timed loop.
struct Contender {
    name: &'static str,
    /// Parse only; the message is `black_box`ed and dropped.
    parse: fn(&Bytes) -> Result<(), String>,
    /// The timed unit: parse + read Call-ID, CSeq, top Via branch.
    parse_read: fn(&Bytes) -> Result<(), String>,
    /// Parse + read, owned, for validation.
    extract: fn(&Bytes) -> Result<Extracted, String>,
}

const CONTENDERS: [Contender; 4] = [
    Contender {
        name: "siproam",
        parse: |b| siproam::parse(b).map(|m| drop(black_box(m))),
        parse_read: |b| siproam::read(b, sink),
        extract: |b| siproam::read(b, Extracted::of),
    },
    Contender {
        name: "rsipstack",
        parse: |b| rsipstack_sip::parse(b).map(|m| drop(black_box(m))),
        parse_read: |b| rsipstack_sip::read(b, sink),
        extract: |b| rsipstack_sip::read(b, Extracted::of),
    },
    Contender {
        name: "rsip",
        parse: |b| rsip_crate::parse(b).map(|m| drop(black_box(m))),
        parse_read: |b| rsip_crate::read(b, sink),
        extract: |b| rsip_crate::read(b, Extracted::of),
    },
    Contender {
        name: "ezk-sip-types",
        parse: |b| ezk::parse(b).map(|m| drop(black_box(m))),
        parse_read: |b| ezk::read(b, sink),
        extract: |b| ezk::read(b, Extracted::of),
    },
];

/// The `received` value the printer benchmark writes into each message's top Via.
const EDIT_RECEIVED: &str = "192.0.2.200";

/// Crate versions the columns refer to (the dev-dependencies are pinned to these).
const VERSIONS: &str = "rsipstack 0.7.14 (default-features = false, features = [\"std\"]), \
                        rsip 0.4.0, ezk-sip-types 0.6.5";

// ---------------------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Config {
    warmup: Duration,
    batch: Duration,
    batches: u32,
    alloc_iters: u32,
}

const FULL: Config = Config {
    warmup: Duration::from_millis(60),
    batch: Duration::from_millis(100),
    batches: 5,
    alloc_iters: 64,
};

const QUICK: Config = Config {
    warmup: Duration::from_millis(10),
    batch: Duration::from_millis(20),
    batches: 3,
    alloc_iters: 8,
};

/// One round = every input once, in order (round-robin for the mix).
fn run_rounds<T>(inputs: &[T], rounds: u64, f: &mut impl FnMut(&T)) -> Duration {
    let start = Instant::now();
    for _ in 0..rounds {
        for x in inputs {
            f(black_box(x));
        }
    }
    start.elapsed()
}

/// Messages per second: warm up (and calibrate) for `cfg.warmup`, then take the fastest of
/// `cfg.batches` batches of at least `cfg.batch` each.
fn measure<T>(cfg: &Config, inputs: &[T], mut f: impl FnMut(&T)) -> f64 {
    let warm_start = Instant::now();
    let mut rounds: u64 = 1;
    let mut elapsed;
    loop {
        elapsed = run_rounds(inputs, rounds, &mut f);
        if warm_start.elapsed() >= cfg.warmup && elapsed * 8 >= cfg.batch {
            break;
        }
        if elapsed * 4 < cfg.batch {
            rounds *= 2;
        }
    }
    let per_round = elapsed.as_secs_f64() / rounds as f64;
    let rounds = ((cfg.batch.as_secs_f64() / per_round).ceil() as u64).max(1);
    let best = (0..cfg.batches)
        .map(|_| run_rounds(inputs, rounds, &mut f))
        .min()
        .unwrap_or(Duration::MAX);
    (rounds * inputs.len() as u64) as f64 / best.as_secs_f64()
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.1} k/s", r / 1e3)
    }
}

fn allocs(a: f64) -> String {
    if (a - a.round()).abs() < 0.005 {
        format!("{a:.0}")
    } else {
        format!("{a:.2}")
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var("SIPROAM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");

    for fx in &FIXTURES {
        check_fixture(fx);
    }
    // One refcounted buffer per message, as a transport would hand it over.
    let inputs: Vec<Bytes> = FIXTURES
        .iter()
        .map(|fx| Bytes::from(fx.raw.to_vec()))
        .collect();

    // Validate every contender on every message; a competitor that cannot handle a message is
    // reported (and left out of that row), siproam failing is fatal.
    let mut ok = vec![[true; CONTENDERS.len()]; FIXTURES.len()];
    let mut notes = Vec::new();
    for (mi, (fx, input)) in FIXTURES.iter().zip(&inputs).enumerate() {
        let want = Extracted::expected(fx);
        for (ci, c) in CONTENDERS.iter().enumerate() {
            let got = (c.extract)(input);
            if got.as_ref() != Ok(&want) {
                assert!(
                    ci != 0,
                    "siproam on {}: got {got:?}, expected {want:?}",
                    fx.name
                );
                notes.push(format!("{} on {}: {got:?}", c.name, fx.name));
                ok[mi][ci] = false;
            }
        }
    }
    // Printer inputs. An unedited message's `to_bytes()` hands back the buffer it was parsed
    // from (a refcount bump), so the printer is also timed on an edited copy: a proxy adding
    // `received` to the top Via, which makes `to_bytes()` serialise the message.
    let printed: Vec<siproam_sip::Message> =
        inputs.iter().map(|b| siproam::parse(b).unwrap()).collect();
    let edited: Vec<siproam_sip::Message> = printed
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.set_top_via_param("received", Some(Some(EDIT_RECEIVED)))
                .unwrap();
            m
        })
        .collect();
    for (fx, (m, e)) in FIXTURES.iter().zip(printed.iter().zip(&edited)) {
        let again = siproam::parse(&m.to_bytes())
            .unwrap_or_else(|err| panic!("siproam re-parse of printed {}: {err}", fx.name));
        assert_eq!(again.call_id(), fx.call_id, "{}: printed Call-ID", fx.name);
        let again = siproam::parse(&e.to_bytes())
            .unwrap_or_else(|err| panic!("siproam re-parse of edited {}: {err}", fx.name));
        let via = again.top_via().unwrap();
        assert_eq!(via.branch(), Some(fx.branch), "{}: edited branch", fx.name);
        assert_eq!(
            via.received(),
            Some(EDIT_RECEIVED),
            "{}: edited received",
            fx.name
        );
    }

    if !bench_mode {
        // Smoke test (`cargo test --benches`): every path once, including the counters.
        for (mi, input) in inputs.iter().enumerate() {
            for (ci, c) in CONTENDERS.iter().enumerate() {
                if ok[mi][ci] {
                    (c.parse)(input).unwrap();
                    (c.parse_read)(input).unwrap();
                    let _ = count_allocs(1, || (c.parse_read)(input).unwrap());
                }
            }
            black_box(printed[mi].to_bytes());
            black_box(edited[mi].to_bytes());
        }
        for n in &notes {
            println!("note: {n}");
        }
        println!(
            "parse bench smoke test: ok ({} messages x {} parsers; run `cargo bench` to measure)",
            FIXTURES.len(),
            CONTENDERS.len()
        );
        return;
    }

    let cfg = if quick { QUICK } else { FULL };
    let started = Instant::now();
    println!(
        "siproam-sip parse benchmark ({} mode: best of {} batches of >= {} ms after {} ms warm-up)",
        if quick { "QUICK" } else { "full" },
        cfg.batches,
        cfg.batch.as_millis(),
        cfg.warmup.as_millis()
    );
    if let Some(cpu) = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
        })
    {
        println!(
            "cpu: {cpu} ({} threads available)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    println!("competitors: {VERSIONS}");
    println!("timed unit: parse from Bytes + read Call-ID, CSeq (number, method), top Via branch");
    println!("(last column: siproam's parse alone, not part of the comparison)");
    println!();

    // --- throughput: parse + read
    let mut header = format!("{:<24} {:>6}", "message", "bytes");
    for c in &CONTENDERS {
        header.push_str(&format!(" {:>14}", c.name));
    }
    header.push_str(&format!(" {:>13}", "siproam/best"));
    header.push_str(&format!(" {:>15}", "siproam parse"));
    println!("{header}");
    println!("{}", "-".repeat(header.len()));

    let rows = FIXTURES.len() + 1;
    for row in 0..rows {
        let (name, row_inputs, size): (&str, &[Bytes], usize) = if row < FIXTURES.len() {
            (
                FIXTURES[row].name,
                std::slice::from_ref(&inputs[row]),
                inputs[row].len(),
            )
        } else {
            (
                "mix (round-robin x6)",
                &inputs,
                inputs.iter().map(Bytes::len).sum::<usize>() / inputs.len(),
            )
        };
        let mut line = format!("{name:<24} {size:>6}");
        let mut rates = [None; CONTENDERS.len()];
        for (ci, c) in CONTENDERS.iter().enumerate() {
            let usable = if row < FIXTURES.len() {
                ok[row][ci]
            } else {
                ok.iter().all(|r| r[ci])
            };
            if !usable {
                line.push_str(&format!(" {:>14}", "parse error"));
                continue;
            }
            let f = c.parse_read;
            let r = measure(&cfg, row_inputs, |b| f(b).unwrap());
            rates[ci] = Some(r);
            line.push_str(&format!(" {:>14}", rate(r)));
        }
        let best_other = rates[1..].iter().flatten().copied().fold(0.0_f64, f64::max);
        match rates[0] {
            Some(own) if best_other > 0.0 => {
                line.push_str(&format!(" {:>12.2}x", own / best_other));
            }
            _ => line.push_str(&format!(" {:>13}", "-")),
        }
        // For reference: siproam's parse alone, without the three reads.
        let f = CONTENDERS[0].parse;
        line.push_str(&format!(
            " {:>15}",
            rate(measure(&cfg, row_inputs, |b| f(b).unwrap()))
        ));
        println!("{line}");
    }
    println!();

    // --- heap allocations
    // [message][contender] -> (parse allocs, parse bytes, parse+read allocs, parse+read bytes)
    let mut counts = vec![[None::<(f64, f64, f64, f64)>; CONTENDERS.len()]; FIXTURES.len()];
    for (mi, input) in inputs.iter().enumerate() {
        for (ci, c) in CONTENDERS.iter().enumerate() {
            if ok[mi][ci] {
                let (p, pb) = count_allocs(cfg.alloc_iters, || (c.parse)(input).unwrap());
                let (pr, prb) = count_allocs(cfg.alloc_iters, || (c.parse_read)(input).unwrap());
                counts[mi][ci] = Some((p, pb, pr, prb));
            }
        }
    }
    let mean = |ci: usize| -> Option<(f64, f64, f64, f64)> {
        let n = FIXTURES.len() as f64;
        counts.iter().try_fold((0.0, 0.0, 0.0, 0.0), |acc, row| {
            let (p, pb, pr, prb) = row[ci]?;
            Some((
                acc.0 + p / n,
                acc.1 + pb / n,
                acc.2 + pr / n,
                acc.3 + prb / n,
            ))
        })
    };
    for (title, bytes) in [
        (
            "heap allocations per message (alloc + realloc calls): parse only / parse+read",
            false,
        ),
        (
            "heap bytes requested per message: parse only / parse+read",
            true,
        ),
    ] {
        println!("{title}");
        let mut header = format!("{:<24}", "message");
        for c in &CONTENDERS {
            header.push_str(&format!(" {:>17}", c.name));
        }
        println!("{header}");
        println!("{}", "-".repeat(header.len()));
        let cell = |v: Option<(f64, f64, f64, f64)>| -> String {
            let text = match v {
                None => "-".to_owned(),
                Some((_, pb, _, prb)) if bytes => format!("{pb:.0} / {prb:.0}"),
                Some((p, _, pr, _)) => format!("{} / {}", allocs(p), allocs(pr)),
            };
            format!(" {text:>17}")
        };
        for (fx, row) in FIXTURES.iter().zip(&counts) {
            let mut line = format!("{:<24}", fx.name);
            for v in row {
                line.push_str(&cell(*v));
            }
            println!("{line}");
        }
        let mut line = format!("{:<24}", "mean over the six");
        for ci in 0..CONTENDERS.len() {
            line.push_str(&cell(mean(ci)));
        }
        println!("{line}");
        println!();
    }

    // --- siproam printer
    println!("siproam printer: msg.to_bytes(), as parsed / after a top-Via `received` edit");
    let header = format!(
        "{:<24} {:>6} {:>14} {:>7} {:>6} {:>14} {:>7}",
        "message", "bytes", "unedited", "allocs", "bytes", "edited", "allocs"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    let print = |m: &siproam_sip::Message| {
        black_box(m.to_bytes());
    };
    for (fx, (m, e)) in FIXTURES.iter().zip(printed.iter().zip(&edited)) {
        let r = measure(&cfg, std::slice::from_ref(m), print);
        let (a, _) = count_allocs(cfg.alloc_iters, || print(m));
        let re = measure(&cfg, std::slice::from_ref(e), print);
        let (ae, _) = count_allocs(cfg.alloc_iters, || print(e));
        println!(
            "{:<24} {:>6} {:>14} {:>7} {:>6} {:>14} {:>7}",
            fx.name,
            m.to_bytes().len(),
            rate(r),
            allocs(a),
            e.to_bytes().len(),
            rate(re),
            allocs(ae)
        );
    }
    println!(
        "{:<24} {:>6} {:>14} {:>7} {:>6} {:>14}",
        "mix (round-robin x6)",
        "",
        rate(measure(&cfg, &printed, print)),
        "",
        "",
        rate(measure(&cfg, &edited, print))
    );
    println!();

    for n in &notes {
        println!("note: {n}");
    }
    println!("total bench time {:.1} s", started.elapsed().as_secs_f64());
}
