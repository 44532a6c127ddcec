//! Progress of a long job (`bench …`, a soak run) as one line on stderr
//! that updates in place — only when stderr is a terminal: tests and CI
//! capture stderr and get nothing from here. At most ten redraws a
//! second; the line is cleared when the job is done (or dropped).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW: Duration = Duration::from_millis(100);

/// One job's progress line.
#[derive(Debug)]
pub struct Progress<W: Write = std::io::Stderr> {
    out: Option<W>,
    what: &'static str,
    total: u64,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    /// `what` (`handoffs`, `accounts registered`) out of `total`, on
    /// stderr when it is a terminal; otherwise nothing is ever written.
    pub fn new(what: &'static str, total: u64) -> Progress {
        let err = std::io::stderr();
        let out = err.is_terminal().then_some(err);
        Progress::to(out, what, total)
    }
}

impl<W: Write> Progress<W> {
    /// As [`Progress::new`], to `out` (`None`: silent).
    pub fn to(out: Option<W>, what: &'static str, total: u64) -> Progress<W> {
        Progress {
            out,
            what,
            total,
            started: Instant::now(),
            drawn: None,
        }
    }

    /// `done` of the total so far: redraws the line (at most every 100 ms,
    /// and always for the last one).
    pub fn set(&mut self, done: u64) {
        let now = Instant::now();
        let due = self
            .drawn
            .is_none_or(|d| now.duration_since(d) >= REDRAW || done >= self.total);
        let Some(out) = self.out.as_mut().filter(|_| due) else {
            return;
        };
        let text = line(
            self.what,
            done,
            self.total,
            now.duration_since(self.started),
        );
        // (a write error on stderr is not the job's failure)
        let _ = write!(out, "\r\x1b[2K{text}");
        let _ = out.flush();
        self.drawn = Some(now);
    }

    /// Clears the line (the results follow on stdout).
    pub fn finish(&mut self) {
        if let (Some(out), Some(_)) = (self.out.as_mut(), self.drawn.take()) {
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }

    /// What was written (for tests).
    #[cfg(test)]
    fn into_inner(mut self) -> Option<W> {
        self.out.take()
    }
}

impl<W: Write> Drop for Progress<W> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `handoffs: 12/50 (24%), 31 s`.
pub fn line(what: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let pct = (done.min(total) * 100).checked_div(total).unwrap_or(100);
    format!("{what}: {done}/{total} ({pct}%), {} s", elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_line_says_how_far_the_job_is() {
        assert_eq!(
            line("handoffs", 12, 50, Duration::from_millis(31_400)),
            "handoffs: 12/50 (24%), 31 s"
        );
        assert_eq!(line("runs", 0, 0, Duration::ZERO), "runs: 0/0 (100%), 0 s");
    }

    #[test]
    fn a_terminal_gets_one_updating_line_cleared_at_the_end() {
        let mut p = Progress::to(Some(Vec::new()), "runs", 3);
        p.set(1);
        // within 100 ms of the last: not redrawn, except the last step
        p.set(2);
        p.set(3);
        p.finish();
        let text = String::from_utf8(p.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            "\r\x1b[2Kruns: 1/3 (33%), 0 s\r\x1b[2Kruns: 3/3 (100%), 0 s\r\x1b[2K"
        );
        assert!(!text.contains('\n'), "one line, updated in place");
    }
}
