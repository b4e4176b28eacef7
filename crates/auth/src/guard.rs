//! Brute-force defence per client address: after each failed login the answer is delayed
//! by `auth_failure_delay` doubled per earlier failure (capped at 16 times the base), and
//! after `auth_failure_limit` failures within `auth_failure_window` further attempts from
//! that address fail at once, without a password check, until the window has passed.
//! A success clears the address's delay. State lives in this process (the service runs
//! as one multi-threaded process).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    pub delay: Duration,
    pub limit: u32,
    pub window: Duration,
}

#[derive(Debug)]
struct Entry {
    /// Failures inside the current window, and when the window started.
    failures: u32,
    since: Instant,
}

/// Shared by all connections of the service.
#[derive(Debug)]
pub struct Guard {
    cfg: GuardConfig,
    by_addr: Mutex<HashMap<String, Entry>>,
}

impl Guard {
    pub fn new(cfg: GuardConfig) -> Guard {
        Guard {
            cfg,
            by_addr: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        match self.by_addr.lock() {
            Ok(mut m) => f(&mut m),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// True when `addr` is over the failure limit in the current window.
    pub fn blocked(&self, addr: &str) -> bool {
        let (limit, window) = (self.cfg.limit, self.cfg.window);
        self.with(|m| {
            m.get(addr)
                .is_some_and(|e| limit > 0 && e.failures >= limit && e.since.elapsed() < window)
        })
    }

    /// Records a failure; returns the delay to apply before answering.
    pub fn failed(&self, addr: &str) -> Duration {
        let window = self.cfg.window;
        let n = self.with(|m| {
            if m.len() > 100_000 {
                m.retain(|_, e| e.since.elapsed() < window);
            }
            let e = m.entry(addr.to_owned()).or_insert(Entry {
                failures: 0,
                since: Instant::now(),
            });
            if e.since.elapsed() >= window {
                e.failures = 0;
                e.since = Instant::now();
            }
            e.failures = e.failures.saturating_add(1);
            e.failures
        });
        self.delay_for(n)
    }

    /// The delay after the `n`th failure: base, 2 base, 4 base, ..., at most 16 base.
    pub fn delay_for(&self, n: u32) -> Duration {
        self.cfg.delay * (1u32 << n.saturating_sub(1).min(4))
    }

    pub fn succeeded(&self, addr: &str) {
        self.with(|m| {
            // Keep a reached limit (a password guessed after many tries stays suspicious),
            // but no longer slow the client down.
            if let Some(e) = m.get(addr)
                && (self.cfg.limit == 0 || e.failures < self.cfg.limit)
            {
                m.remove(addr);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_blocks() {
        let g = Guard::new(GuardConfig {
            delay: Duration::from_millis(10),
            limit: 3,
            window: Duration::from_secs(60),
        });
        assert_eq!(g.failed("a"), Duration::from_millis(10));
        assert_eq!(g.failed("a"), Duration::from_millis(20));
        assert!(!g.blocked("a"));
        assert_eq!(g.failed("a"), Duration::from_millis(40));
        assert!(g.blocked("a"));
        assert!(!g.blocked("b"));
        assert_eq!(g.delay_for(10), Duration::from_millis(160));
        g.succeeded("b");
    }
}
