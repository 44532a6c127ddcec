//! A headless baresip 1.0.0 of `interop/baresip/run.sh` (its SIP port, its
//! ctrl_tcp port, a work dir with its config and `baresip.log`), driven
//! through `interop/baresip/ctrl.py` and stopped on drop. Used by the
//! `interop_*` tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo;

/// A running baresip, stopped (`stop.sh`) on drop.
pub struct Baresip {
    workdir: PathBuf,
    ctrl: u16,
}

impl Baresip {
    /// Starts baresip on 127.0.0.1:`port` (UDP and TCP), ctrl_tcp on
    /// `ctrl`, in `workdir`, with `run.sh`'s `extra` options
    /// (`--auto-answer`, `--user NAME`, `--registrar URI`, …); fails the
    /// test when it does not start.
    pub fn start(port: u16, ctrl: u16, workdir: &Path, extra: &[&str]) -> Baresip {
        let out = Command::new("bash")
            .arg(repo().join("interop/baresip/run.sh"))
            .args([port.to_string(), ctrl.to_string()])
            .arg(workdir)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "baresip did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Baresip {
            workdir: workdir.to_path_buf(),
            ctrl,
        }
    }

    /// One command through ctrl_tcp (`dial URI`, `hangup`, `message TEXT`,
    /// …, with ctrl.py's `--wait EVENT --timeout S`); its output. Fails
    /// the test when ctrl.py does.
    pub fn ctrl(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
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
        Command::new("python3")
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
