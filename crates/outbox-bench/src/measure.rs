//! CPU time and memory, as the kernel accounts them (`getrusage`,
//! `/proc/<pid>/status`), and the statistics the harness reports.

use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike;

/// CPU time and peak resident memory of a process (or of its waited-for
/// children).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time, over every thread.
    pub cpu: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
    /// Page faults served without I/O (`ru_minflt`): each maps a page the
    /// process touched for the first time since it was given back.
    pub minor_faults: u64,
}

fn usage(who: UsageWho) -> Usage {
    match getrusage(who) {
        Ok(u) => {
            let micros = u.user_time().num_microseconds() + u.system_time().num_microseconds();
            Usage {
                cpu: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
                max_rss_kib: u64::try_from(u.max_rss()).unwrap_or(0),
                minor_faults: u64::try_from(u.minor_page_faults()).unwrap_or(0),
            }
        }
        // getrusage cannot fail for these arguments; a zero reading shows up in the figures.
        Err(_) => Usage::default(),
    }
}

/// This process: every thread.
pub fn self_usage() -> Usage {
    usage(UsageWho::RUSAGE_SELF)
}

/// The children this process has waited for, summed (CPU) or the largest
/// (peak RSS).
pub fn children_usage() -> Usage {
    usage(UsageWho::RUSAGE_CHILDREN)
}

/// A field of `/proc/<pid>/status` in KiB, e.g. `VmHWM` (peak RSS) or `VmRSS`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The median of `values` (the mean of the middle two for an even count);
/// `NaN` for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The smallest and largest of `values`.
pub fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(range(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t  999 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(12_345));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(999));
        assert_eq!(parse_status_kib(status, "VmPeak"), None);
        assert!(proc_status_kib(std::process::id(), "VmHWM").unwrap() > 0);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let before = self_usage();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = self_usage();
        assert!(after.cpu > before.cpu, "{before:?} {after:?}");
        assert!(after.max_rss_kib > 0);
    }
}
