//! Per-destination scheduling state, Postfix's qmgr "queue": the requests waiting for one
//! (transport, destination), how many are in flight, and the concurrency window that
//! Postfix's feedback moves. The window starts at `initial_destination_concurrency`,
//! grows with positive feedback for each completed delivery (never past the
//! `*_destination_concurrency_limit`, nor further than the deliveries in flight plus the
//! initial concurrency, so an idle destination does not collect credit), and shrinks with
//! negative feedback for each connection or handshake failure. Failures accumulate as
//! pseudo-cohorts (a cohort is `window` deliveries): after
//! `*_destination_concurrency_failed_cohort_limit` of them with no delivery between, the
//! destination is dead: its mail is deferred without an attempt ("delivery temporarily
//! suspended") until `minimal_backoff_time` has passed or the queue is flushed.
//!
//! Pure bookkeeping: no I/O, no clock of its own (callers pass `now`), so it is unit tested
//! here.

use crate::settings::{Feedback, TransportLimits};
use std::collections::VecDeque;
use std::time::Instant;

/// Why and until when a destination is dead.
#[derive(Debug, Clone)]
pub struct Dead {
    pub until: Instant,
    pub dsn: String,
    pub reason: String,
}

#[derive(Debug)]
pub struct DestState<P> {
    /// Requests not yet handed to an agent, oldest first.
    pub pending: VecDeque<P>,
    /// Requests (jobs) in flight.
    pub busy: usize,
    /// Deliveries allowed in flight now (>= 1 while alive).
    pub window: usize,
    success: f64,
    failure: f64,
    fail_cohorts: f64,
    pub dead: Option<Dead>,
    /// `destination_rate_delay`: no new delivery before this.
    pub next_start: Option<Instant>,
    /// On the scheduler's list of destinations with pending work.
    pub listed: bool,
    /// The latest negative feedback: failures are remembered across idle periods
    /// (mail to a failing site tends to arrive one message at a time), for a while.
    last_failure: Option<Instant>,
}

impl<P> DestState<P> {
    pub fn new(l: &TransportLimits) -> DestState<P> {
        DestState {
            pending: VecDeque::new(),
            busy: 0,
            window: initial_window(l),
            success: 0.0,
            failure: 0.0,
            fail_cohorts: 0.0,
            dead: None,
            next_start: None,
            listed: false,
            last_failure: None,
        }
    }

    /// The window in effect: a rate delay means one delivery at a time.
    fn limit(&self, l: &TransportLimits) -> usize {
        if l.rate_delay.is_zero() {
            self.window
        } else {
            1
        }
    }

    /// Deliveries that may start now besides those in flight (0 when dead).
    pub fn free(&self, l: &TransportLimits) -> usize {
        if self.dead.is_some() {
            return 0;
        }
        self.limit(l).saturating_sub(self.busy)
    }

    /// Whether another delivery may start now.
    pub fn may_start(&self, l: &TransportLimits, now: Instant) -> bool {
        self.dead.is_none() && self.busy < self.limit(l) && self.next_start.is_none_or(|t| t <= now)
    }

    /// A dead destination whose time has come is alive again, with the initial window.
    /// Returns whether it is (still) dead.
    pub fn check_dead(&mut self, l: &TransportLimits, now: Instant) -> bool {
        if self.dead.as_ref().is_some_and(|d| d.until <= now) {
            self.revive(l);
        }
        self.dead.is_some()
    }

    pub fn revive(&mut self, l: &TransportLimits) {
        self.dead = None;
        self.window = initial_window(l);
        self.success = 0.0;
        self.failure = 0.0;
        self.fail_cohorts = 0.0;
    }

    /// A delivery completed without a site failure.
    pub fn positive(&mut self, l: &TransportLimits) {
        self.fail_cohorts = 0.0;
        self.last_failure = None;
        if self.dead.is_some() {
            return;
        }
        let cap = l
            .destination_concurrency
            .min(self.busy + l.initial_concurrency)
            .max(1);
        if self.window >= cap {
            return;
        }
        self.success += feedback(l.positive_feedback, self.window);
        while self.success >= 1.0 && self.window < cap {
            self.window += 1;
            self.success -= 1.0;
            self.failure = 0.0;
        }
        if self.window >= cap {
            self.success = 0.0;
        }
    }

    /// A connection or handshake failure (the destination, not a recipient, failed).
    /// Returns true when this made the destination dead.
    pub fn negative(
        &mut self,
        l: &TransportLimits,
        now: Instant,
        retry: std::time::Duration,
        dsn: &str,
        reason: &str,
    ) -> bool {
        if self.dead.is_some() {
            return false;
        }
        self.last_failure = Some(now);
        self.fail_cohorts += 1.0 / self.window.max(1) as f64;
        if l.failed_cohort_limit > 0 && self.fail_cohorts >= l.failed_cohort_limit as f64 {
            self.dead = Some(Dead {
                until: now + retry,
                dsn: dsn.to_string(),
                reason: reason.to_string(),
            });
            return true;
        }
        self.failure -= feedback(l.negative_feedback, self.window);
        while self.failure < 0.0 {
            self.window = self.window.saturating_sub(1).max(1);
            self.failure += 1.0;
            self.success = 0.0;
        }
        false
    }

    /// Nothing waiting, nothing in flight, nothing learned worth keeping: not dead, and
    /// no failure within `memory`.
    pub fn idle(&self, now: Instant, memory: std::time::Duration) -> bool {
        self.pending.is_empty()
            && self.busy == 0
            && self.dead.is_none()
            && !self.listed
            && self.last_failure.is_none_or(|t| now >= t + memory)
    }
}

fn initial_window(l: &TransportLimits) -> usize {
    l.initial_concurrency.min(l.destination_concurrency).max(1)
}

fn feedback(f: Feedback, window: usize) -> f64 {
    match f {
        Feedback::Fixed(x) => x,
        Feedback::PerWindow(x) => x / window.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(limit: usize, initial: usize, cohorts: u32) -> TransportLimits {
        TransportLimits {
            process_limit: 100,
            destination_concurrency: limit,
            destination_recipients: 50,
            initial_concurrency: initial,
            failed_cohort_limit: cohorts,
            positive_feedback: Feedback::Fixed(1.0),
            negative_feedback: Feedback::Fixed(1.0),
            rate_delay: Duration::ZERO,
            site_feedback: true,
        }
    }

    #[test]
    fn window_starts_at_initial_and_grows_with_use_up_to_the_limit() {
        let l = limits(8, 5, 1);
        let mut d: DestState<()> = DestState::new(&l);
        assert_eq!(d.window, 5);
        // Idle: no growth beyond busy + initial.
        d.positive(&l);
        assert_eq!(d.window, 5);
        d.busy = 5;
        for _ in 0..10 {
            d.positive(&l);
        }
        assert_eq!(d.window, 8);
        let small = limits(2, 5, 1);
        assert_eq!(DestState::<()>::new(&small).window, 2);
    }

    #[test]
    fn failures_shrink_the_window_then_a_cohort_makes_it_dead() {
        let l = limits(20, 5, 1);
        let now = Instant::now();
        let mut d: DestState<()> = DestState::new(&l);
        let retry = Duration::from_secs(300);
        // 1/5 + 1/4 + 1/3 = 0.78 cohorts, window 5 -> 2.
        for w in [4, 3, 2] {
            assert!(!d.negative(&l, now, retry, "4.4.1", "refused"));
            assert_eq!(d.window, w);
        }
        assert!(d.negative(&l, now, retry, "4.4.1", "refused"));
        assert!(d.check_dead(&l, now));
        assert!(!d.may_start(&l, now));
        assert!(!d.check_dead(&l, now + retry));
        assert_eq!(d.window, 5);
        assert!(d.may_start(&l, now + retry));
    }

    #[test]
    fn a_delivery_between_failures_resets_the_cohort_count() {
        let l = limits(20, 1, 2);
        let now = Instant::now();
        let retry = Duration::from_secs(1);
        let mut d: DestState<()> = DestState::new(&l);
        assert!(!d.negative(&l, now, retry, "4.4.1", "x"));
        d.positive(&l);
        assert!(!d.negative(&l, now, retry, "4.4.1", "x"));
        assert!(d.negative(&l, now, retry, "4.4.1", "x"));
        assert!(!d.idle(now, retry));
        // Limit 0: never dead.
        let never = limits(20, 1, 0);
        let mut d: DestState<()> = DestState::new(&never);
        for _ in 0..10 {
            assert!(!d.negative(&never, now, retry, "4.4.1", "x"));
        }
        assert_eq!(d.window, 1);
        assert!(!d.idle(now, retry));
        assert!(d.idle(now + retry, retry));
    }

    #[test]
    fn rate_delay_means_one_at_a_time_and_spacing() {
        let mut l = limits(20, 5, 1);
        l.rate_delay = Duration::from_secs(2);
        let now = Instant::now();
        let mut d: DestState<()> = DestState::new(&l);
        assert!(d.may_start(&l, now));
        d.busy = 1;
        assert!(!d.may_start(&l, now));
        d.busy = 0;
        d.next_start = Some(now + l.rate_delay);
        assert!(!d.may_start(&l, now));
        assert!(d.may_start(&l, now + l.rate_delay));
    }
}
