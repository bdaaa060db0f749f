//! A count and a rate on standard error while a long command runs.

use std::time::{Duration, Instant};

/// How often a line is written.
const EVERY: Duration = Duration::from_secs(2);

/// Writes `<what>: <done> of <total> (<rate>/s)` to standard error at most
/// every two seconds, so a script's log shows a long replay or redrive
/// moving, and a person sees how far it is.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    total: Option<usize>,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Progress of `what` (e.g. `republished`) out of `total`, when known.
    pub fn new(what: &'static str, total: Option<usize>) -> Self {
        let now = Instant::now();
        Self {
            what,
            total,
            started: now,
            last: now,
        }
    }

    /// Reports `done` if the last line is old enough.
    pub fn tick(&mut self, done: usize) {
        let now = Instant::now();
        if now.duration_since(self.last) < EVERY {
            return;
        }
        self.last = now;
        let rate = done as f64 / now.duration_since(self.started).as_secs_f64().max(1e-3);
        match self.total {
            Some(total) => eprintln!("{}: {done} of {total} ({rate:.0}/s)", self.what),
            None => eprintln!("{}: {done} ({rate:.0}/s)", self.what),
        }
    }
}
