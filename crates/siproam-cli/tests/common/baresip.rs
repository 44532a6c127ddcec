//! A headless baresip 1.0.0 of `interop/baresip/run.sh` (its SIP port, its
//! ctrl_tcp port, a work dir with its config and `baresip.log`), driven
//! through `interop/baresip/ctrl.py` and stopped on drop. Used by the
//! `interop_*` tests. [`BaresipOptions`] starts it with SRTP (SDES, its
//! `srtp.so`), on another address, or inside a network namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo;

/// A running baresip, stopped (`stop.sh`) on drop.
pub struct Baresip {
    workdir: PathBuf,
    ctrl: u16,
    /// The network namespace it runs in (its ctrl_tcp is on that
    /// namespace's 127.0.0.1).
    netns: Option<String>,
}

/// How [`Baresip::start_with`] starts it, beyond `run.sh`'s other options.
#[derive(Clone, Debug, Default)]
pub struct BaresipOptions {
    /// The account's `mediaenc` (`run.sh --mediaenc`, loads `srtp.so`):
    /// `srtp` (offers RTP/AVP with `a=crypto`, falls back to plain RTP),
    /// `srtp-mand` (offers RTP/SAVP; refuses a plain offer with 488) or
    /// `srtp-mandf` (RTP/SAVPF). `None`: plain RTP/AVP (an offer with
    /// `a=crypto` in RTP/AVP is answered plain, an RTP/SAVP one gets 488).
    pub mediaenc: Option<String>,
    /// Load `srtp.so` even without a `mediaenc` (`run.sh --srtp-module`).
    pub srtp_module: bool,
    /// SIP and media on this IPv4 address instead of 127.0.0.1
    /// (`run.sh --address`).
    pub address: Option<String>,
    /// Run it inside this network namespace (`ip netns exec NS`), its
    /// ctrl_tcp on the namespace's own 127.0.0.1.
    pub netns: Option<String>,
}

impl BaresipOptions {
    /// SRTP with this `mediaenc` (`srtp`, `srtp-mand`, `srtp-mandf`).
    pub fn srtp(mediaenc: &str) -> BaresipOptions {
        BaresipOptions {
            mediaenc: Some(mediaenc.to_owned()),
            ..BaresipOptions::default()
        }
    }
}

/// RTP counters and addresses of baresip's current call, read mid-call
/// from its `audio_debug` command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtpStats {
    /// RTP packets received from the peer's SSRCs (its RTCP members'
    /// `rcvd`, summed): only packets that passed SRTP's authentication.
    pub rx: u64,
    /// RTP packets it sent (`TX: packets=`).
    pub tx: u64,
    /// Where it sends RTP (`remote: ADDR:PORT/…`), e.g. `127.0.0.3:40000`.
    pub remote: String,
    /// Its media encryption (`menc: NAME (secure=…)`): the name (`srtp-mand`,
    /// `srtp`, …) or `(none)`.
    pub menc: String,
    /// Whether it says the stream is secure (`secure=yes`): SRTP keys
    /// negotiated and in use.
    pub secure: bool,
}

impl Baresip {
    /// Starts baresip on 127.0.0.1:`port` (UDP and TCP), ctrl_tcp on
    /// `ctrl`, in `workdir`, with `run.sh`'s `extra` options
    /// (`--auto-answer`, `--user NAME`, `--registrar URI`, …); fails the
    /// test when it does not start.
    pub fn start(port: u16, ctrl: u16, workdir: &Path, extra: &[&str]) -> Baresip {
        Baresip::start_with(port, ctrl, workdir, extra, &BaresipOptions::default())
    }

    /// [`Baresip::start`] with [`BaresipOptions`] (SRTP, address,
    /// namespace).
    pub fn start_with(
        port: u16,
        ctrl: u16,
        workdir: &Path,
        extra: &[&str],
        o: &BaresipOptions,
    ) -> Baresip {
        let mut cmd = Baresip::command(o.netns.as_deref(), "bash");
        cmd.arg(repo().join("interop/baresip/run.sh"))
            .args([port.to_string(), ctrl.to_string()])
            .arg(workdir)
            .args(extra);
        if let Some(m) = &o.mediaenc {
            cmd.args(["--mediaenc", m]);
        }
        if o.srtp_module {
            cmd.arg("--srtp-module");
        }
        if let Some(a) = &o.address {
            cmd.args(["--address", a]);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "baresip did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Baresip {
            workdir: workdir.to_path_buf(),
            ctrl,
            netns: o.netns.clone(),
        }
    }

    /// `program`, inside namespace `netns` when given.
    fn command(netns: Option<&str>, program: &str) -> Command {
        match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// One command through ctrl_tcp (`dial URI`, `hangup`, `message TEXT`,
    /// …, with ctrl.py's `--wait EVENT --timeout S`); its output. Fails
    /// the test when ctrl.py does.
    pub fn ctrl(&self, args: &[&str]) -> String {
        let out = Baresip::command(self.netns.as_deref(), "python3")
            .arg(repo().join("interop/baresip/ctrl.py"))
            .arg(self.ctrl.to_string())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctrl.py {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A ctrl_tcp connection printing its events (JSON, one a line, on the
    /// child's stdout) until `until` comes or `timeout_secs` pass. Only
    /// baresip's newest ctrl_tcp connection gets events: make no other
    /// ctrl call while it listens.
    pub fn events(&self, until: &str, timeout_secs: u32) -> Child {
        Baresip::command(self.netns.as_deref(), "python3")
            .arg(repo().join("interop/baresip/ctrl.py"))
            .arg(self.ctrl.to_string())
            .args(["--events", "--until", until, "--timeout"])
            .arg(timeout_secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// What it logged so far (`baresip.log`, lossily decoded).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.workdir.join("baresip.log")).unwrap_or_default(),
        )
        .into_owned()
    }

    /// Packets (sent, received) of its last call, from its log.
    pub fn packets(&self) -> (u64, u64) {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("packets:"))
            .unwrap_or_default()
            .to_owned();
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (
            nums.first().copied().unwrap_or(0),
            nums.get(1).copied().unwrap_or(0),
        )
    }

    /// Its `audio_debug` report on the current call (the audio stream,
    /// its `menc:` line, RTP and RTCP counters). Through ctrl_tcp: a
    /// listener of [`Baresip::events`] gets no more events after it.
    pub fn audio_debug(&self) -> String {
        self.ctrl(&["audio_debug"])
    }

    /// [`RtpStats`] of its current call (from [`Baresip::audio_debug`]).
    pub fn rtp_stats(&self) -> RtpStats {
        parse_audio_debug(&self.audio_debug())
    }

    /// The suite its srtp module enabled last (`srtp: audio: SRTP is
    /// Enabled (cryptosuite=NAME)` in its log), e.g.
    /// `AES_CM_128_HMAC_SHA1_80`; `None` when SRTP never started.
    pub fn srtp_suite(&self) -> Option<String> {
        self.log()
            .lines()
            .rev()
            .find_map(|l| l.split("SRTP is Enabled (cryptosuite=").nth(1))
            .and_then(|rest| rest.split(')').next())
            .map(str::to_owned)
    }

    /// Every SRTP error in its log, without colour codes: `srtp: failed
    /// to decrypt RTP packet with N bytes (REASON)` (REASON `Unknown error
    /// 217` for an authentication failure (libre's EAUTH), `Operation
    /// already in progress` for a replayed packet (EALREADY)), the same for
    /// RTCP, `failed to encrypt …`, and `srtp: no valid a=crypto attribute
    /// from remote peer`.
    pub fn srtp_errors(&self) -> Vec<String> {
        self.log()
            .split(['\n', '\u{1b}'])
            .filter(|l| l.contains("srtp: failed to") || l.contains("srtp: no valid a=crypto"))
            .filter_map(|l| l.find("srtp: ").and_then(|at| l.get(at..)))
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// The `a=crypto:` lines of every SDP in its log (sent and received,
    /// in order; `-s` logs each SIP message).
    pub fn crypto_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("a=crypto:"))
            .map(str::to_owned)
            .collect()
    }

    /// The WAV files its `--record` (sndfile.so) wrote for its calls:
    /// (what it sent, what it received), sorted (the last call's last).
    pub fn recordings(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.workdir.join("rec"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        let with = |suffix: &str| -> Vec<PathBuf> {
            files
                .iter()
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .cloned()
                .collect()
        };
        (with("-enc.wav"), with("-dec.wav"))
    }

    /// Waits until `n` calls of its have ended (its log holds `n` RTP
    /// summaries, `packets:`, written when a call is closed and its
    /// recordings finished); 30 s at most.
    pub fn wait_calls_ended(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("packets:").count() < n {
            assert!(
                Instant::now() < deadline,
                "baresip did not end call {n}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its `contacts` line for `uri` once `pred` holds for it (30 s at
    /// most; polled through ctrl_tcp).
    pub fn contact_until(&self, uri: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.ctrl(&["contacts"]);
            let line = list
                .lines()
                .find(|l| l.contains(uri))
                .unwrap_or_default()
                .to_owned();
            if pred(&line) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "baresip never showed {what}: {list}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("interop/baresip/stop.sh"))
            .arg(&self.workdir)
            .status();
    }
}

/// [`RtpStats`] from an `audio_debug` report of baresip 1.0.0:
///
/// ```text
///  local: 0.0.0.0:6140, remote: 127.0.0.1:43802/127.0.0.1:43803
///  menc: srtp-mand (secure=yes)
///   member 0x55bc4af0: lost=0 Jitter=1.7ms RTT=0.0ms
///                  IP=127.0.0.1:43802 psent=250 rcvd=262
///   TX: packets=262, octets=41920
/// ```
pub fn parse_audio_debug(report: &str) -> RtpStats {
    let mut stats = RtpStats::default();
    let number = |s: &str| -> u64 {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    for line in report.lines() {
        let line = line.trim();
        if let Some(rest) = line.split("remote: ").nth(1) {
            stats.remote = rest.split('/').next().unwrap_or_default().to_owned();
        }
        if let Some(rest) = line.strip_prefix("menc: ") {
            let (name, secure) = rest.rsplit_once(" (secure=").unwrap_or((rest, ""));
            stats.menc = name.to_owned();
            stats.secure = secure.starts_with("yes");
        }
        if let Some(rest) = line.split("rcvd=").nth(1) {
            stats.rx += number(rest);
        }
        if let Some(rest) = line.strip_prefix("TX: packets=") {
            stats.tx = number(rest);
        }
    }
    stats
}
